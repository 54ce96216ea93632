"""pfc: the command-line entry point that ties the toolkit together (``pfc --help``).

Layout: :mod:`pfc.cli` (the subcommands), :mod:`pfc.config` (the study's options and presets),
:mod:`pfc.stages` (one module per stage of ``pfc demo``), :mod:`pfc.runner` (stage order, resume
protocol, result files), :mod:`pfc.html_report` (``report.html`` from the files on disk),
:mod:`pfc.features` (features of a trained run), :mod:`pfc.certificates` (certificates on
class-balanced subsamples), :mod:`pfc.npz` (features and labels from an ``.npz`` file).
"""
