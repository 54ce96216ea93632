"""Cost of measuring every layer's collapse against plain training of the same model, in one run.

Goal (issue 5): measuring every measured layer every 10 epochs costs at most 15% on top of
training. Two comparisons, interleaved and repeated so that machine load hits both sides alike:

1. **Per-epoch accounting.** One training epoch (the loop of :func:`resnet_pfc.train.train`:
   forward, cross entropy, backward, SGD step over the shuffled training set) against one
   measurement (:func:`resnet_pfc.measure.measure_model`, the call ``train`` makes: every
   measured layer, classifier for NC3/NC4, the geodesic line on 101 + 11 points, two passes
   over the training set). Overhead of measuring every ``E`` epochs = ``t_measure / (E t_epoch)``.
2. **End to end.** :func:`resnet_pfc.train.train` itself (checkpoints every epoch, CSV output)
   for ``--epochs`` epochs with ``eval_every=10``, against the same call with the measurement
   replaced by a stub that returns nothing. ``train`` also measures at epoch 0, so a 10-epoch
   run holds two measurements; the table gives the raw ratio and the ratio per 10 epochs.

Ratios, not seconds, are the result: the machine this ran on is shared.

Run (about 1 minute on 2 shared cores)::

    .venv/bin/python benchmarks/resnet_overhead.py
    .venv/bin/python benchmarks/resnet_overhead.py --dataset digits --repeats 3 --epochs 10
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from resnet_pfc.config import TrainConfig, make_model, resolve_config
from resnet_pfc.data import load_dataset
from resnet_pfc.measure import Measurement, measure_model

# The package exports a function named ``train`` too; take the module itself.
train_mod = importlib.import_module("resnet_pfc.train")


def _epoch(model, opt, loader) -> None:
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def per_epoch(cfg, repeats: int, epochs_per_repeat: int) -> tuple[float, float, float, int]:
    """Median seconds of one training epoch, one measurement, one without the line; layers."""
    torch.manual_seed(cfg.seed)
    ds = load_dataset(cfg.dataset, per_class=cfg.per_class, seed=cfg.seed)
    model = make_model(cfg, ds.input_shape, ds.num_classes)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    eval_loader = DataLoader(ds, batch_size=cfg.eval_batch_size, shuffle=False)
    _epoch(model, opt, train_loader)  # warm-up
    measure_model(model, eval_loader, cfg)
    t_ep, t_me, t_nl = [], [], []
    for _ in range(repeats):
        for _ in range(epochs_per_repeat):
            t0 = time.perf_counter()
            _epoch(model, opt, train_loader)
            t_ep.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        measure_model(model, eval_loader, cfg)
        t_me.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        measure_model(model, eval_loader, cfg, line=False)
        t_nl.append(time.perf_counter() - t0)
    med = statistics.median
    return med(t_ep), med(t_me), med(t_nl), len(model.measured_layers())


def end_to_end(cfg, repeats: int) -> tuple[float, float]:
    """Median wall seconds of train() with and without the measurement."""

    def stub(*args, **kwargs):
        return Measurement(layers={}, positions={}, distances={})

    real, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            # alternate the order (ABBA...) so that a drift in machine load cancels
            for which in ("plain", "real") if r % 2 == 0 else ("real", "plain"):
                out = Path(tmp) / f"{which}{r}"
                run_cfg = replace(cfg, out=str(out))
                t0 = time.perf_counter()
                if which == "plain":
                    with mock.patch.object(train_mod, "measure_model", stub):
                        train_mod.train(run_cfg)
                else:
                    train_mod.train(run_cfg)
                (plain if which == "plain" else real).append(time.perf_counter() - t0)
    return statistics.median(real), statistics.median(plain)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="model width (default: preset)")
    p.add_argument("--blocks", type=int, default=None, help="blocks (default: preset)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each end-to-end run")
    p.add_argument("--every", type=int, default=10, help="measurement interval in epochs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--goal", type=float, default=0.15)
    a = p.parse_args(argv)

    # the options named as TrainConfig fields pass through by name
    same = {k: getattr(a, k) for k in ("dataset", "epochs", "per_class", "width", "blocks")}
    quiet = {"progress": False, "figures": False, "out": "unused"}
    cfg = resolve_config(TrainConfig(**same, eval_every=a.every, **quiet))
    t_ep, t_me, t_nl, n_layers = per_epoch(cfg, a.repeats, a.every)
    over = t_me / (a.every * t_ep)
    over_nl = t_nl / (a.every * t_ep)
    real, plain = end_to_end(cfg, a.repeats)
    n_meas = len({0, *range(a.every, a.epochs + 1, a.every), a.epochs})
    e2e = real / plain - 1.0
    e2e_per = e2e * (a.epochs / a.every) / n_meas

    print(
        f"dataset={cfg.dataset} model={cfg.model} width={cfg.width} blocks={cfg.blocks} "
        f"(layers measured: {n_layers}), "
        f"batch={cfg.batch_size}, eval batch={cfg.eval_batch_size}, repeats={a.repeats}"
    )
    print(f"{'comparison':<52} {'ratio':>8} {'overhead per {} ep':>20}".format(a.every))
    print("-" * 82)
    print(f"{'one measurement / one training epoch':<52} {t_me / t_ep:>8.3f} {over:>19.1%}")
    print(f"{'  the same without the geodesic line':<52} {t_nl / t_ep:>8.3f} {over_nl:>19.1%}")
    print(
        f"{f'train() {a.epochs} ep, {n_meas} measurements / stubbed':<52} "
        f"{real / plain:>8.3f} {e2e_per:>19.1%}"
    )
    print(
        f"(medians: epoch {t_ep:.3g} s, measurement {t_me:.3g} s, without line {t_nl:.3g} s, "
        f"train() {real:.3g} s vs stubbed {plain:.3g} s; shared machine, compare ratios only)"
    )
    worst = max(over, e2e_per)
    verdict = "met" if worst <= a.goal else "NOT met"
    print(f"goal: at most {a.goal:.0%} extra per {a.every} epochs -> {verdict} (worst {worst:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
