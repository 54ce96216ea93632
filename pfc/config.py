"""Configuration of the study (``pfc demo``): every option, the two presets and their validation.

:class:`StudyConfig` holds every option (``None`` fields take the preset's value);
:func:`resolve_study_config` fills them from :data:`FULL` (the demo's recipe, chosen and measured
in ``docs/demo_recipe.md``) or :data:`QUICK` (the ``--quick`` smoke version) and validates
them. The study trains two networks (:func:`networks`): the paper's fully connected ResNet
(Table I) and a deep LayerNorm ResNet (the architecture of Súkeník, Lampert and Mondelli, 2025),
each with its own recipe. :data:`PAPER_RECIPE` and :data:`RECIPE_REASONS` are the paper's
training recipe and why each network's differs (:func:`recipe_vs_paper`, shown in the report,
generated from the values actually used). :data:`STAGES` names the
stages in order (their folders under the study directory; the stages live in
:mod:`pfc.stages`, the order and the resume protocol in :mod:`pfc.runner`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from typing import Any

import numpy as np

from resnet_pfc.config import PRESETS, TrainConfig, dataset_arg
from resnet_pfc.datasets import canonical_name
from ufm.errors import InputError
from ufm.losses import LOSSES
from ufm.options import check_fields, documented, option, option_from
from ufm.threads import MAX_THREADS
from ufm.validate import SEED_MAX

__all__ = [
    "StudyConfig",
    "Network",
    "networks",
    "resolve_study_config",
    "config_doc",
    "milestones",
    "recipe_vs_paper",
    "STAGES",
    "QUICK",
    "FULL",
    "PAPER_RECIPE",
    "RECIPE_REASONS",
]

#: Stages in order (folder names under the study directory).
STAGES = ("train", "deep", "ot", "sec4b", "network", "proofs")

#: Defaults of the full demo (``None`` fields of :class:`StudyConfig`). The ``deep_*`` entries
#: are the recipe of the deep LayerNorm ResNet; the others that of the fully connected ResNet
#: and of the later stages. Chosen and measured in ``docs/demo_recipe.md``.
FULL: dict[str, Any] = {
    "dataset": "mnist_5k",
    "lr_drops": (1 / 3, 2 / 3),
    "loss": "ce",
    "weight_decay": 5e-4,
    "batch_size": 128,
    "epochs": 60,
    "blocks": 10,
    "width": 128,
    "train_per_class": None,
    "lr": 0.01,
    "eval_every": 10,
    "deep_model": "ln_resnet1",
    "deep_blocks": 34,
    "deep_width": 24,
    "deep_loss": "ce",
    "deep_lr": 0.05,
    "deep_weight_decay": 4e-3,
    "deep_batch_size": 128,
    "deep_epochs": 150,
    "deep_lr_drops": (0.8, 0.9),
    "deep_eval_every": 10,
    "lams": tuple(float(v) for v in np.logspace(-3, 2, 11)),
    "features_per_class": 100,
    "certify_per_class": 2,
    "sec4b": {"K": 4, "n": 50, "d": 16, "lam": 1.0},
    "sec4b_certify_per_class": (3, 10),
    "instances": 200,
    "tol": 1e-8,
}

#: Defaults of ``--quick`` (a smoke version of the same pipeline, well under a minute).
QUICK: dict[str, Any] = {
    "dataset": "digits",
    "lr_drops": (1 / 3, 2 / 3),
    "loss": "mse",
    "weight_decay": 5e-3,
    "batch_size": 32,
    "epochs": 40,
    "blocks": 3,
    "width": 64,
    "train_per_class": 15,
    "lr": 0.02,
    "eval_every": 5,
    "deep_model": "ln_resnet1",
    "deep_blocks": 6,
    "deep_width": 16,
    "deep_loss": "ce",
    "deep_lr": 0.05,
    "deep_weight_decay": 5e-3,
    "deep_batch_size": 32,
    "deep_epochs": 20,
    "deep_lr_drops": (0.8, 0.9),
    "deep_eval_every": 5,
    "lams": (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    "features_per_class": None,
    "certify_per_class": 1,
    "sec4b": {"K": 3, "n": 10, "d": 10, "lam": 1.0},
    "sec4b_certify_per_class": (2,),
    "instances": 10,
    "tol": 1e-7,
}

#: The paper's training recipe (Sec. IV-A) that each network's recipe is compared with. Weight
#: decay, batch size and lr were lost from the paper's text: this project uses Papyan, Han and
#: Donoho's (2020) defaults for them (see MATH.md), and the table says so.
PAPER_RECIPE: dict[str, Any] = {
    "loss": "ce",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 128,
    "epochs": 350,
    "lr_drops": (1 / 3, 2 / 3),
}

#: Options of the recipe whose paper value is not in the paper's text (Papyan et al.'s default).
NOT_IN_PAPER = frozenset({"weight_decay", "batch_size", "lr"})

#: Why the full demo's recipe differs from the paper's, per network (``"fc"``, ``"deep"``) and
#: option. A reason refers to the full preset's value: where the value used differs from it
#: (``--quick`` or a command-line choice), :func:`recipe_vs_paper` says so instead. The trials
#: cited are those of ``docs/demo_recipe.md``.
RECIPE_REASONS: dict[str, dict[str, str]] = {
    "fc": {
        "dataset": "the paper's MNIST (60,000 images) does not train in minutes on 2 CPU cores; "
        "mnist_5k is 5,000 real MNIST images that ship with the install (4,000 train, 1,000 "
        "test)",
        "model": "the paper's depth (10 blocks) at width 128 instead of 1000: width 1000 costs "
        "about 50 times the CPU; after 60 epochs width 128 is as collapsed as 256 (trials F1, "
        "F2)",
        "epochs": "the time budget of `make demo` (60 epochs: about 20 s of CPU); the network "
        "is shown as the paper's recipe trains it, not tuned for collapse (350 epochs at width "
        "256: docs/results/mnist5k)",
    },
    "deep": {
        "dataset": "as for the fully connected ResNet",
        "model": "the deep network: post-LayerNorm residual blocks LN(x + ReLU(W x + c)) "
        "without LayerNorm affine (the depth-study family ln_resnet1, after Súkeník, Lampert "
        "and Mondelli 2025, whose theorem says collapse gets tighter with depth); width 24: "
        "narrower streams collapse further (last-layer PFC1 0.16 / 0.10 / 0.084 at width 64 / "
        "32 / 24, trials D5, D6, D13) and width 16 loses the terminal phase (D9); depth 40 is "
        "not better than 34 (D14, D19, D24)",
        "weight_decay": "4e-3: 1e-2 collapses less within the budget (D3, D7, D11); at width 24 "
        "4e-3 meets every goal where 5e-3 breaks the strict order of PFC2 (D21, D13)",
        "lr": "0.05: 0.07 and 0.1 collapse less (D4, D12, D15)",
        "epochs": "150 epochs (about 40 s of CPU with the measurements): 100 leave PFC1 above "
        "0.1 (D6); 200 are not better (D16)",
        "lr_drops": "late drops (after 80% and 90% of the epochs) keep the lr high while the "
        "layers collapse: NC1 0.060 against 0.075 with drops at 1/3 and 2/3 (trials D5, D1)",
    },
}


def _training(kind: Any, help: str, **meta: Any) -> Any:
    """A training option that the command line does not set (``None``: the preset's)."""
    return option(kind, help, command_line=False, **meta)


def _per_class(help: str, everything: str) -> Any:
    """A class-balanced subset, in samples per class (at least 2; a preset's ``None``: all)."""
    return _training(
        int, f"{help}: samples per class", low=2, doc=f"A preset's ``None``: {everything}."
    )


@documented
@dataclass(frozen=True)
class StudyConfig:
    """Every option of the study (``None``: the default of :data:`FULL` or :data:`QUICK`).

    Each field carries its help and bounds (:func:`ufm.options.option`): ``pfc demo``'s
    options (those declared for the command line), the checks of :func:`resolve_study_config`
    and the list below come from them. The fully connected ResNet trains with SGD, momentum 0.9.
    """

    out: str = option(str, "study directory", default="pfc-demo")
    seed: int = option(
        int,
        "seed of everything",
        default=0,
        low=0,
        high=SEED_MAX,
        doc="It seeds the training, the synthetic data, the solvers and the theorem checks.",
    )
    quick: bool = option(
        bool, "small sizes: a smoke test (< 1 minute)", default=False, doc="See :data:`QUICK`."
    )
    resume: bool = option(
        bool,
        "keep the stages an earlier run finished",
        default=False,
        doc="Those whose ``stage.json`` exists; an interrupted training continues.",
    )
    force: bool = option(bool, "delete an earlier study in --out and start afresh", default=False)
    threads: int = option(
        int,
        "torch and BLAS threads; 1 is the fastest for these small problems",
        default=1,
        low=1,
        high=MAX_THREADS,
        doc="Set during the study and restored afterwards.",
    )
    progress: bool = option("no", "no progress bars or status lines", default=True)
    dataset: str | None = option(
        dataset_arg,
        "training data: digits or mnist_5k (or mnist-5k), both shipped with the install",
        doc="Any name :func:`resnet_pfc.data.load_dataset` accepts works.",
    )
    lr_drops: tuple[float, ...] | None = _training(
        float,
        "fractions of the epochs after which the lr is divided by 10",
        low=0,
        high=1,
        positive=True,
        nargs="+",
        doc="Epoch ``round(f * epochs)`` for each fraction ``f`` in ``(0, 1]`` (the paper: 1/3 "
        "and 2/3).",
    )
    loss: str | None = option(
        str,
        "training loss: ce (cross entropy, the paper's) or mse (the squared error)",
        choices=LOSSES,
        doc="The demo's is MSE: see :data:`RECIPE_REASONS` and ``docs/demo_recipe.md``.",
    )
    weight_decay: float | None = option_from(TrainConfig, "weight_decay", command_line=False)
    batch_size: int | None = option_from(TrainConfig, "batch_size", command_line=False)
    epochs: int | None = option_from(TrainConfig, "epochs", shown=None)
    blocks: int | None = _training(int, "residual blocks of the ResNet", low=1)
    width: int | None = _training(int, "width of the ResNet", low=1)
    train_per_class: int | None = _per_class("balanced training subset", "the whole split")
    lr: float | None = option_from(
        TrainConfig, "lr", shown=None, command_line=False, doc="Divided by 10 at lr_drops."
    )
    eval_every: int | None = option_from(TrainConfig, "eval_every", shown=None, command_line=False)
    deep: bool = option(
        "no",
        "skip the deep LayerNorm ResNet (train only the paper's fully connected ResNet)",
        default=True,
        doc="The deep network is trained in the ``deep`` stage (folder ``deep/``).",
    )
    deep_model: str | None = _training(
        str,
        "family of the deep network",
        choices=("ln_resnet1", "ln_resnet2"),
        doc="Post-LayerNorm residual blocks with one or two linear layers "
        "(:class:`resnet_pfc.models.LNResNet`).",
    )
    deep_blocks: int | None = option_from(
        TrainConfig, "blocks", help="residual blocks of the deep LayerNorm ResNet", shown=None
    )
    deep_width: int | None = _training(int, "width of the deep LayerNorm ResNet", low=2)
    deep_loss: str | None = option_from(
        TrainConfig, "loss", help="training loss of the deep network", command_line=False
    )
    deep_lr: float | None = option_from(
        TrainConfig,
        "lr",
        help="initial learning rate of the deep network",
        shown=None,
        command_line=False,
    )
    deep_weight_decay: float | None = option_from(
        TrainConfig, "weight_decay", help="SGD weight decay of the deep network", command_line=False
    )
    deep_batch_size: int | None = option_from(
        TrainConfig, "batch_size", help="SGD batch size of the deep network", command_line=False
    )
    deep_epochs: int | None = option_from(
        TrainConfig, "epochs", help="training epochs of the deep network", shown=None
    )
    deep_lr_drops: tuple[float, ...] | None = _training(
        float,
        "fractions of the deep network's epochs after which its lr is divided by 10",
        low=0,
        high=1,
        positive=True,
        nargs="+",
    )
    deep_eval_every: int | None = option_from(
        TrainConfig,
        "eval_every",
        help="measure the deep network's blocks every N epochs",
        shown=None,
        command_line=False,
    )
    lams: tuple[float, ...] | None = option(
        float,
        "lam grid of both sweeps",
        low=0,
        positive=True,
        nargs="+",
        doc="Fig. 5 and the sweep on the network's features.",
    )
    features_per_class: int | None = _per_class(
        "class-balanced subset of the training features for the network MUFM", "all of them"
    )
    certify_per_class: int | None = _training(
        int,
        "samples per class of the network-feature certificate",
        low=1,
        doc="``K * m <= 60``.",
    )
    instances: int | None = option(
        int, "theorem-check instances", low=1, doc="Theorems 1-2 (Theorems 3-4 get a tenth)."
    )
    tol: float | None = _training(float, "solver tolerance (gradient norm)", low=0, positive=True)
    extra: dict[str, Any] = option(
        dict,
        "free entries kept in config.json",
        default_factory=dict,
        command_line=False,
        doc="No stage reads them.",
    )


# Options that may change between a study and its resumption.


def resolve_study_config(cfg: StudyConfig) -> StudyConfig:
    """Fill defaults from :data:`FULL` / :data:`QUICK` and validate every option.

    Raises
    ------
    InputError
        An option out of range (the message names it and the value).
    """
    pre = stage_preset(cfg)
    vals = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in pre}
    vals = {k: pre[k] if v is None else v for k, v in vals.items()}
    vals["dataset"] = canonical_name(vals["dataset"])
    # the bounds and choices of every option (those of lr_drops and lams are checked below)
    check_fields(replace(cfg, **vals))
    for key in ("lr_drops", "deep_lr_drops"):
        drops = tuple(float(f) for f in vals[key])
        if any(not 0.0 < f <= 1.0 for f in drops):
            raise InputError(f"{key} must be fractions of the epochs in (0, 1], got {list(drops)}")
        vals[key] = tuple(sorted(drops))
    lams = tuple(float(v) for v in vals["lams"])
    if len(lams) < 2 or any(not math.isfinite(v) or v <= 0 for v in lams):
        raise InputError(f"lams must hold at least 2 finite values > 0, got {list(lams)}")
    if vals["certify_per_class"] * 10 > 60:
        raise InputError(
            f"certify_per_class={vals['certify_per_class']} gives "
            f"{vals['certify_per_class'] * 10} samples for the 10 digit classes; the MUFM "
            "relaxation is limited to 60 (use at most 6, 2 takes seconds)"
        )
    if not str(cfg.out):
        raise InputError("out must name a study directory")
    vals["lams"] = tuple(sorted(lams))
    return replace(cfg, **vals)


def config_doc(cfg: StudyConfig) -> dict[str, Any]:
    """The options of ``cfg`` as the ``"study"`` entry of ``config.json`` (tuples as lists)."""
    d = asdict(cfg)
    d["lams"] = list(cfg.lams or ())
    d["lr_drops"] = list(cfg.lr_drops or ())
    d["deep_lr_drops"] = list(cfg.deep_lr_drops or ())
    return d


def stage_preset(cfg: StudyConfig) -> dict[str, Any]:
    """The preset of ``cfg`` (:data:`QUICK` or :data:`FULL`): sizes that are not options."""
    return QUICK if cfg.quick else FULL


@dataclass(frozen=True)
class Network:
    """One network the study trains: its stage (folder), architecture and recipe.

    Built by :func:`networks` from a resolved :class:`StudyConfig`; SGD with momentum 0.9, the
    lr divided by 10 after each fraction of ``lr_drops`` of the epochs.
    """

    name: str  #: ``"fc"`` (the paper's) or ``"deep"`` (the deep LayerNorm ResNet)
    stage: str  #: stage and folder under the study directory
    title: str  #: how the report names it
    model: str  #: :attr:`resnet_pfc.TrainConfig.model`
    blocks: int
    width: int
    loss: str
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    lr_drops: tuple[float, ...]
    eval_every: int
    per_class: int | None

    @property
    def milestones(self) -> tuple[int, ...]:
        """Epochs after which the lr is divided by 10: ``round(f * epochs)`` per drop ``f``."""
        return tuple(sorted({max(1, round(f * self.epochs)) for f in self.lr_drops}))

    @property
    def architecture(self) -> str:
        """The architecture in words, e.g. ``"FC ResNet, 10 blocks, width 256"``."""
        kind = "FC ResNet" if self.model == "fc" else f"LayerNorm ResNet ({self.model})"
        return f"{kind}, {self.blocks} blocks, width {self.width}"


#: The networks of the study: name, stage (folder), how the report names it, and the prefix of
#: its recipe fields in :class:`StudyConfig` (``deep_`` for the deep network's).
_NETWORKS = (
    ("fc", "train", "the paper's fully connected ResNet (Table I)", ""),
    ("deep", "deep", "the deep LayerNorm ResNet (Súkeník, Lampert, Mondelli 2025)", "deep_"),
)
#: The recipe fields that each network reads from :class:`StudyConfig` (with its prefix).
_RECIPE = ("blocks", "width", "loss", "lr", "weight_decay", "batch_size", "epochs", "lr_drops",
           "eval_every")  # fmt: skip


def networks(cfg: StudyConfig) -> tuple[Network, ...]:
    """The networks of a resolved study: the paper's FC ResNet, then (unless ``--no-deep``) the
    deep LayerNorm ResNet."""
    nets = []
    for name, stage, title, prefix in _NETWORKS:
        if name == "deep" and not cfg.deep:
            continue
        recipe = {k: getattr(cfg, prefix + k) for k in _RECIPE}
        recipe["lr_drops"] = tuple(recipe["lr_drops"])
        model = "fc" if name == "fc" else cfg.deep_model
        nets.append(Network(name=name, stage=stage, title=title, model=model,
                            per_class=cfg.train_per_class, **recipe))  # fmt: skip
    return tuple(nets)


def milestones(cfg: StudyConfig) -> tuple[int, ...]:
    """Epochs after which the FC ResNet's lr is divided by 10 (:attr:`Network.milestones`)."""
    return networks(cfg)[0].milestones


def _fraction(f: float) -> str:
    q = Fraction(f).limit_denominator(100)
    return f"{q.numerator}/{q.denominator}"


def _schedule(drops: tuple[float, ...], milestones: tuple[int, ...] | None = None) -> str:
    fr = " and ".join(_fraction(f) for f in drops)
    if milestones is None:
        return f"divided by 10 after {fr} of the epochs"
    return f"divided by 10 after {fr} of the epochs (epochs {', '.join(map(str, milestones))})"


def recipe_vs_paper(cfg: StudyConfig, net: Network | None = None) -> list[dict[str, Any]]:
    """A network's training options next to the paper's, with the reason of every difference.

    Generated from the values actually used: a reason from :data:`RECIPE_REASONS` is shown only
    where the value is the full preset's (the value the reason was measured for); a value set by
    ``--quick`` or on the command line is named as such, with the full preset's value.
    ``net`` defaults to the FC ResNet.
    """
    net = net or networks(cfg)[0]
    prefix = "" if net.name == "fc" else "deep_"
    lost = "not in the paper's text; Papyan et al.'s default"
    mnist_lr = PRESETS["mnist"]["lr"]
    rows: list[tuple[str, Any, Any, tuple[str, ...], bool]] = [
        # (option, paper, used, fields of StudyConfig it comes from, differs)
        ("dataset", "MNIST (60,000 training images)", cfg.dataset, ("dataset",), True),
        ("model", "FC ResNet, 10 blocks, width 1000 (Table I, MNIST)", net.architecture,
         (f"{prefix}blocks", f"{prefix}width") + (("deep_model",) if prefix else ()), True),
        ("loss", "cross entropy", {"ce": "cross entropy", "mse": "squared error (MSE)"}[
            net.loss], (f"{prefix}loss",), net.loss != PAPER_RECIPE["loss"]),
        ("optimiser", "SGD, momentum 0.9", "SGD, momentum 0.9", (), False),
        ("weight_decay", f"{PAPER_RECIPE['weight_decay']:g} ({lost})", net.weight_decay,
         (f"{prefix}weight_decay",), net.weight_decay != PAPER_RECIPE["weight_decay"]),
        ("batch_size", f"{PAPER_RECIPE['batch_size']} ({lost})", net.batch_size,
         (f"{prefix}batch_size",), net.batch_size != PAPER_RECIPE["batch_size"]),
        ("epochs", PAPER_RECIPE["epochs"], net.epochs, (f"{prefix}epochs",),
         net.epochs != PAPER_RECIPE["epochs"]),
        ("lr schedule", _schedule(PAPER_RECIPE["lr_drops"]),
         _schedule(net.lr_drops, net.milestones), (f"{prefix}lr_drops",),
         tuple(round(f, 6) for f in net.lr_drops)
         != tuple(round(f, 6) for f in PAPER_RECIPE["lr_drops"])),
        ("lr", f"{mnist_lr:g} (not in the paper's text; this project's MNIST preset)", net.lr,
         (f"{prefix}lr",), net.lr != mnist_lr),
    ]  # fmt: skip
    reasons = RECIPE_REASONS.get(net.name, {})
    out = []
    for name, paper, used, keys, differs in rows:
        key = {"lr schedule": "lr_drops"}.get(name, name)
        why = ""
        if differs:
            off = [k for k in keys if getattr(cfg, k) != FULL.get(k)]
            if not off:
                why = reasons.get(key, "")
            else:
                src = "--quick (a smoke test)" if cfg.quick else "this run's options"
                full = ", ".join(f"{k} = {_show(FULL.get(k))}" for k in off)
                why = f"set by {src}; the full demo uses {full}"
                if reasons.get(key):
                    why += f" (why: {reasons[key]})"
        out.append({"option": name, "paper": paper, "demo": used, "differs": differs, "why": why})
    return out


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " and ".join(_fraction(f) if isinstance(f, float) else str(f) for f in v)
    return f"{v:g}" if isinstance(v, float) else str(v)
