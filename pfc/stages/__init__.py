"""The stages of the study, one module each, in the order of :data:`pfc.config.STAGES`.

Each module exposes ``run(cfg, out, say) -> dict``: it writes its folder ``out/<stage>/`` and
returns the stage document that :mod:`pfc.runner` saves as ``out/<stage>/stage.json``.

- :mod:`pfc.stages.train`: train the paper's fully connected ResNet (``train/``) and the deep
  LayerNorm ResNet (stage ``deep``, ``deep/``), measuring every layer of both.
- :mod:`pfc.stages.ot`: optimal transport between the layers of each trained network against
  Theorem 3's constant-speed geodesic (``ot/``).
- :mod:`pfc.stages.sec4b`: the paper's Sec. IV-B experiment and certificates (``sec4b/``).
- :mod:`pfc.stages.network`: MUFM and UFM on the trained network's features (``network/``).
- :mod:`pfc.stages.proofs`: the theorem checks (``proofs/``).
"""
