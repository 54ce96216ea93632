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

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from typing import Any

import numpy as np

from resnet_pfc.config import PRESETS, TrainConfig, dataset_arg
from resnet_pfc.datasets import canonical_name
from ufm.errors import InputError
from ufm.options import check_fields, documented, nested, option, resolve_nested
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

#: Defaults of the full demo (``None`` fields of :class:`StudyConfig`). ``"fc"`` and ``"deep"``
#: are the training options of the two networks (:class:`resnet_pfc.config.TrainConfig`
#: options: the paper's fully connected ResNet and the deep LayerNorm ResNet); the other
#: entries are the study's. Chosen and measured in ``docs/demo_recipe.md``.
FULL: dict[str, Any] = {
    "dataset": "mnist_5k",
    "lr_drops": (1 / 3, 2 / 3),
    "fc": {
        "model": "fc",
        "loss": "ce",
        "weight_decay": 5e-4,
        "batch_size": 128,
        "epochs": 60,
        "blocks": 10,
        "width": 128,
        "lr": 0.01,
        "eval_every": 10,
    },
    "deep": {
        "model": "ln_resnet1",
        "blocks": 34,
        "width": 24,
        "loss": "ce",
        "lr": 0.05,
        "weight_decay": 4e-3,
        "batch_size": 128,
        "epochs": 150,
        "eval_every": 10,
    },
    "deep_lr_drops": (0.8, 0.9),
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
    "fc": {
        "model": "fc",
        "loss": "mse",
        "weight_decay": 5e-3,
        "batch_size": 32,
        "epochs": 40,
        "blocks": 3,
        "width": 64,
        "per_class": 15,
        "lr": 0.02,
        "eval_every": 5,
    },
    "deep": {
        "model": "ln_resnet1",
        "blocks": 6,
        "width": 16,
        "loss": "ce",
        "lr": 0.05,
        "weight_decay": 5e-3,
        "batch_size": 32,
        "epochs": 20,
        "eval_every": 5,
        "per_class": 15,
    },
    "deep_lr_drops": (0.8, 0.9),
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


#: The options of each network's :class:`resnet_pfc.config.TrainConfig` that the study sets
#: itself (from its own options and the network's ``lr_drops``: :func:`networks`).
STUDY_SET: tuple[str, ...] = (
    "dataset", "seed", "threads", "progress", "out", "resume", "milestones", "eval_test", "figures",
)  # fmt: skip
_LOSS_HELP = "training loss: ce (cross entropy, the paper's) or mse (the squared error)"
#: The fully connected ResNet's training options with what they mean here
#: (:func:`ufm.options.nested`; ``pfc demo`` sets ``--loss`` and ``--epochs``).
FC_OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"choices": ("fc",), "command_line": False},
    "loss": {"help": _LOSS_HELP, "shown": None},
    "epochs": {"shown": None},
    "blocks": {"help": "residual blocks of the ResNet", "command_line": False},
    "per_class": {"low": 2, "command_line": False},
}
#: The deep LayerNorm ResNet's (``pfc demo`` sets ``--deep-blocks`` and ``--deep-epochs``).
DEEP_OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"choices": ("ln_resnet1", "ln_resnet2"), "command_line": False},
    "blocks": {"help": "residual blocks of the deep LayerNorm ResNet", "shown": None},
    "epochs": {"help": "training epochs of the deep network", "shown": None},
    "width": {"low": 2, "command_line": False},
    "per_class": {"low": 2, "command_line": False},
}


@documented
@dataclass(frozen=True)
class StudyConfig:
    """Every option of the study (``None``: the default of :data:`FULL` or :data:`QUICK`).

    Each field carries its help and bounds (:func:`ufm.options.option`): ``pfc demo``'s
    options (those declared for the command line), the checks of :func:`resolve_study_config`
    and the list below come from them. Each network holds its training options (``fc``, ``deep``:
    :class:`resnet_pfc.config.TrainConfig`, SGD).
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
    fc: TrainConfig | None = nested(
        TrainConfig,
        "the training of the paper's fully connected ResNet (Table I)",
        options=FC_OPTIONS,
        doc="A mapping of some options, e.g. ``{'epochs': 5}``, replaces those of the preset's. "
        "The study sets " + ", ".join(STUDY_SET) + " (:func:`networks`).",
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
    train_deep: bool = option(
        "no",
        "skip the deep LayerNorm ResNet (train only the paper's fully connected ResNet)",
        default=True,
        flag="--no-deep",
        doc="The deep network is trained in the ``deep`` stage (folder ``deep/``).",
    )
    deep: TrainConfig | None = nested(
        TrainConfig,
        "the training of the deep LayerNorm ResNet (Súkeník, Lampert and Mondelli, 2025)",
        options=DEEP_OPTIONS,
        prefix="deep-",
        doc="Post-LayerNorm residual blocks with one or two linear layers "
        "(:class:`resnet_pfc.models.LNResNet`). As ``fc``.",
    )
    deep_lr_drops: tuple[float, ...] | None = _training(
        float,
        "fractions of the deep network's epochs after which its lr is divided by 10",
        low=0,
        high=1,
        positive=True,
        nargs="+",
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

    ``None`` fields take the preset's value; a mapping given for ``fc`` or ``deep`` replaces
    those training options of the preset's network.

    Raises
    ------
    InputError
        An option out of range (the message names it and the value).
    """
    pre = stage_preset(cfg)
    vals = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in pre}
    vals = {k: pre[k] if v is None else v for k, v in vals.items()}
    for name, _, _, _ in _NETWORKS:
        given = getattr(cfg, name)
        net = resolve_nested(given, TrainConfig(**pre[name]), name=name)
        defaults = TrainConfig()
        for k in STUDY_SET:
            if (isinstance(given, Mapping) and k in given) or getattr(net, k) != getattr(
                defaults, k
            ):
                raise InputError(
                    f"{name}.{k} is set by the study (from its own options: --dataset, --seed, "
                    f"--threads, --out, lr_drops...); leave it at TrainConfig's default "
                    f"{getattr(defaults, k)!r}"
                )
        vals[name] = net
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


#: The networks' training options that ``config.json``'s ``fc`` and ``deep`` leave out.
_NOT_RECORDED = ("out", "resume", "threads", "progress")


def config_doc(cfg: StudyConfig) -> dict[str, Any]:
    """The options of a resolved ``cfg`` as the ``"study"`` entry of ``config.json`` (tuples as
    lists). ``fc`` and ``deep`` are the networks' training options as trained, with those the
    study sets (data set, seed, milestones...: :data:`STUDY_SET`), except ``out`` and ``resume``
    (set by the stage) and ``threads`` and ``progress`` (the study's own, which may change on
    resumption: :data:`pfc.runner.RESUME_FREE`)."""
    doc = asdict(cfg)
    for name, _, _, drops in _NETWORKS:
        train = asdict(_network_train(cfg, name, getattr(cfg, drops)))
        doc[name] = {k: v for k, v in train.items() if k not in _NOT_RECORDED}
    return json.loads(json.dumps(doc, default=list))


def stage_preset(cfg: StudyConfig) -> dict[str, Any]:
    """The preset of ``cfg`` (:data:`QUICK` or :data:`FULL`): sizes that are not options."""
    return QUICK if cfg.quick else FULL


@dataclass(frozen=True)
class Network:
    """One network the study trains: its stage (folder), how the report names it, and its
    training options.

    Built by :func:`networks` from a resolved :class:`StudyConfig`.
    """

    name: str  #: ``"fc"`` (the paper's) or ``"deep"`` (the deep LayerNorm ResNet)
    stage: str  #: stage and folder under the study directory
    title: str  #: how the report names it
    lr_drops: tuple[float, ...]  #: fractions of the epochs after which the lr is divided by 10
    train: TrainConfig  #: every training option but ``out`` and ``resume`` (set by the stage)

    @property
    def milestones(self) -> tuple[int, ...]:
        """Epochs after which the lr is divided by 10: ``round(f * epochs)`` per drop ``f``."""
        return self.train.milestones or ()

    @property
    def architecture(self) -> str:
        """The architecture in words, e.g. ``"FC ResNet, 10 blocks, width 256"``."""
        t = self.train
        kind = "FC ResNet" if t.model == "fc" else f"LayerNorm ResNet ({t.model})"
        return f"{kind}, {t.blocks} blocks, width {t.width}"


#: The networks of the study: name (its field of :class:`StudyConfig`), stage (folder), how
#: the report names it, and the field of its lr drops.
_NETWORKS = (
    ("fc", "train", "the paper's fully connected ResNet (Table I)", "lr_drops"),
    ("deep", "deep", "the deep LayerNorm ResNet (Súkeník, Lampert, Mondelli 2025)",
     "deep_lr_drops"),
)  # fmt: skip


def networks(cfg: StudyConfig) -> tuple[Network, ...]:
    """The networks of a resolved study: the paper's FC ResNet, then (unless ``--no-deep``) the
    deep LayerNorm ResNet. Each network's training options are its field's, with those of
    :data:`STUDY_SET` set by the study (the test split measured too, the figures drawn)."""
    nets = []
    for name, stage, title, drops_field in _NETWORKS:
        if name == "deep" and not cfg.train_deep:
            continue
        drops = tuple(getattr(cfg, drops_field))
        train = _network_train(cfg, name, drops)
        nets.append(Network(name=name, stage=stage, title=title, lr_drops=drops, train=train))
    return tuple(nets)


def _network_train(cfg: StudyConfig, name: str, drops: tuple[float, ...]) -> TrainConfig:
    """The training options of network ``name`` of a resolved study: its field's, with those of
    :data:`STUDY_SET` set by the study (milestones from the fractions ``drops``; ``out`` and
    ``resume`` by its stage)."""
    own: TrainConfig = getattr(cfg, name)
    ms = tuple(sorted({max(1, round(f * own.epochs)) for f in drops}))
    return replace(own, dataset=cfg.dataset, seed=cfg.seed, threads=cfg.threads,
                   progress=cfg.progress, milestones=ms, eval_test=True, figures=True)  # fmt: skip


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
    n, t = net.name, net.train
    drops = "lr_drops" if n == "fc" else f"{n}_lr_drops"
    lost = "not in the paper's text; Papyan et al.'s default"
    mnist_lr = PRESETS["mnist"]["lr"]
    momentum = PAPER_RECIPE["momentum"]
    rows: list[tuple[str, Any, Any, tuple[str, ...], bool]] = [
        # (option, paper, used, options of StudyConfig it comes from, differs)
        ("dataset", "MNIST (60,000 training images)", cfg.dataset, ("dataset",), True),
        ("model", "FC ResNet, 10 blocks, width 1000 (Table I, MNIST)", net.architecture,
         (f"{n}.blocks", f"{n}.width", f"{n}.model"), True),
        ("loss", "cross entropy", {"ce": "cross entropy", "mse": "squared error (MSE)"}[
            t.loss], (f"{n}.loss",), t.loss != PAPER_RECIPE["loss"]),
        ("optimiser", f"SGD, momentum {momentum:g}", f"SGD, momentum {t.momentum:g}",
         (f"{n}.momentum",), t.momentum != momentum),
        ("weight_decay", f"{PAPER_RECIPE['weight_decay']:g} ({lost})", t.weight_decay,
         (f"{n}.weight_decay",), t.weight_decay != PAPER_RECIPE["weight_decay"]),
        ("batch_size", f"{PAPER_RECIPE['batch_size']} ({lost})", t.batch_size,
         (f"{n}.batch_size",), t.batch_size != PAPER_RECIPE["batch_size"]),
        ("epochs", PAPER_RECIPE["epochs"], t.epochs, (f"{n}.epochs",),
         t.epochs != PAPER_RECIPE["epochs"]),
        ("lr schedule", _schedule(PAPER_RECIPE["lr_drops"]),
         _schedule(net.lr_drops, net.milestones), (drops,),
         tuple(round(f, 6) for f in net.lr_drops)
         != tuple(round(f, 6) for f in PAPER_RECIPE["lr_drops"])),
        ("lr", f"{mnist_lr:g} (not in the paper's text; this project's MNIST preset)", t.lr,
         (f"{n}.lr",), t.lr != mnist_lr),
    ]  # fmt: skip
    reasons = RECIPE_REASONS.get(n, {})
    out = []
    for name, paper, used, keys, differs in rows:
        key = {"lr schedule": "lr_drops", "optimiser": "momentum"}.get(name, name)
        why = ""
        if differs:
            off = [k for k in keys if _used(cfg, k) != _full(k)]
            if not off:
                why = reasons.get(key, "")
            else:
                src = "--quick (a smoke test)" if cfg.quick else "this run's options"
                full = ", ".join(f"{k} = {_show(_full(k))}" for k in off)
                why = f"set by {src}; the full demo uses {full}"
                if reasons.get(key):
                    why += f" (why: {reasons[key]})"
        out.append({"option": name, "paper": paper, "demo": used, "differs": differs, "why": why})
    return out


def _used(cfg: StudyConfig, key: str) -> Any:
    """The value of option ``key`` (``"dataset"``, ``"fc.lr"``) of a resolved study."""
    head, _, tail = key.partition(".")
    v = getattr(cfg, head)
    return getattr(v, tail) if tail else v


def _full(key: str) -> Any:
    """The value of option ``key`` in the full demo (:data:`FULL`; TrainConfig's default for a
    training option it does not set)."""
    head, _, tail = key.partition(".")
    if not tail:
        return FULL.get(head)
    return FULL[head].get(tail, getattr(TrainConfig(), tail))


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " and ".join(_fraction(f) if isinstance(f, float) else str(f) for f in v)
    return f"{v:g}" if isinstance(v, float) else str(v)
