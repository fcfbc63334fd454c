"""Typed experiment configuration: defaults, YAML loading, dotted overrides, validation.

One path for every value: dataclass defaults, then a YAML file's values, then the
values a search trial samples, then ``--set key=value`` overrides. Every step goes
through :func:`apply_overrides`, so an unknown key, a wrong type or an out-of-range
number gets the same one-line :class:`ConfigError` wherever it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cbl.errors import ConfigError
from cbl.yamlio import LineMap, atomic_write_text, dump_yaml, load_yaml

__all__ = [
    "PATH_KEYS",
    "absolute_paths",
    "looks_like_local_path",
    "CORPORA",
    "POOLINGS",
    "LOSS_TYPES",
    "CLUSTER_METHODS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "CentersConfig",
    "OptimConfig",
    "TrainConfig",
    "ExperimentConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "flat_keys",
    "load_config",
    "parse_set_options",
    "save_config",
    "suggest_key",
]

CORPORA = ("asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df", "in_the_wild", "folder", "demo")
POOLINGS = ("mean", "max", "attention")
LOSS_TYPES = ("cluster_only", "combined", "ce_only")
CLUSTER_METHODS = ("kmeans", "online")
LAYER_MODES = ("last", "index", "weighted")
REPULSION_MODES = ("all", "nearest")
ATTRACTION_MODES = ("distance", "margin", "to_center")
COMBINED_SCORES = ("cluster", "ce", "sum")
EVAL_MODES = ("full", "window")
TRAIN_CROPS = ("random", "fixed")
LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DataConfig:
    corpus: str = "asvspoof2019_la"  # which protocol reader; "demo" = built-in synthetic corpus
    root: str = ""  # dataset root folder; empty means "not configured" (a clear error at train time)
    train_protocol: str = ""  # explicit protocol paths override the corpus's standard layout
    dev_protocol: str = ""
    eval_protocol: str = ""
    sample_rate: int = 16000  # every SSL model we support was pre-trained at 16 kHz
    max_len: int = 64600  # ~4 s, the ASVspoof convention for training crops
    eval_mode: str = "full"  # score the full utterance (padded + masked) or one fixed window
    eval_window: int = 64600  # window length when eval_mode == "window"
    # "full" scoring feeds longer utterances in chunks of at most this many samples (embeddings averaged),
    # so a 10-minute recording is scored within bounded memory (~30 s at 16 kHz)
    eval_max_len: int = 480000
    # training crop of utterances longer than max_len: "random" (a new offset every epoch) or "fixed" (one
    # offset per utterance for the whole run; what train.feature_cache needs)
    train_crop: str = "random"
    rawboost_algo: int = 0  # 0 none, 1..8 as in the RawBoost paper (training only)
    # 0: fresh RawBoost draws every epoch; N >= 1: N fixed augmented copies of each item, epoch e using copy
    # e mod N (what lets train.feature_cache serve RawBoost: each copy's features are computed once)
    augment_copies: int = 0
    balanced_sampling: bool = False  # draw bonafide and spoof equally often per batch
    skip_missing: bool = False  # skip (and count) protocol entries whose audio is missing
    # DataLoader worker processes; -1 = auto: on a GPU the run's CPUs minus one (at most 8), so decoding and
    # RawBoost keep ahead of the model; on the CPU 0 (the model needs those cores itself)
    num_workers: int = -1
    max_train_utterances: int = 0  # 0 = all; a cap for smoke tests and quick sweeps
    demo_seed: int = 0  # the demo corpus is deterministic for this seed
    # per split (train/dev/eval) for the demo corpus: 900 (360 bonafide) keeps dev EER's 95% bootstrap interval
    # within +-1.6 points at the demo's typical 4-6% (480 with 35% bonafide: -2.3/+3.0 at 8%), and gives the
    # cluster loss enough steps: cluster_only best dev EER 4.1% in 6 epochs (600: 12.0%)
    demo_utterances: int = 900
    demo_seconds: float = 1.0  # length of each demo utterance


@dataclass
class ModelConfig:
    # a hub name, a local save_pretrained folder, or "tiny" (random weights, CPU-sized: --demo and tests)
    ssl: str = "facebook/wav2vec2-xls-r-300m"
    layer_mode: str = "last"  # which hidden states feed the head: last, index, weighted (learnable sum)
    layer_index: int = -1  # used when layer_mode == "index" (python indexing over hidden states)
    freeze_feature_encoder: bool = True  # the CNN feature encoder rarely benefits from tuning
    freeze_ssl: bool = False  # freeze the whole front-end (no_grad; implies the feature encoder): head-only training
    pooling: str = "mean"  # frame pooling: mean, max, attention (attentive statistics)
    embedding_dim: int = 256  # L2-normalised embedding the cluster loss works on


@dataclass
class LossConfig:
    type: str = "cluster_only"  # cluster_only, combined (CE + lambda * cluster), ce_only
    num_clusters: int = 10  # K bonafide centers (seed default)
    # weight of the spoof repulsion term (the seed's 1.0 halved). While the model does not yet tell the classes
    # apart, moving every embedding away from the centers together gains alpha * K^(1/p) per unit of distance
    # in repulsion and costs ~1 in attraction (both are linear in the distance, cbl/losses.py): below
    # 1 / K^(1/p) (0.81 at K = 10, T = 0.1) that move never pays, so the loss can only fall by separating
    alpha: float = 0.5
    margin: float = 0.2  # spoofs are pushed until cos(z, c) <= margin for every center (hinge on the distance)
    # bonafide pull: "margin" = relu(bonafide_margin - cos) (OC-Softmax's m_real 0.9: a bonafide close enough to
    # its center is left alone), "to_center" = 1 - cos (the seed's pull to cosine 1)
    attraction: str = "distance"
    bonafide_margin: float = 0.9
    spread_weight: float = 1.0  # weight of the batch spread hinge (0 = off)
    spread_target: float = 0.5  # the batch's RMS spread sqrt(1 - |mean z|^2) below which the hinge pushes
    # the same hinge on the batch's bonafide alone (0 = off): keeps their sub-populations apart, so K clusters
    # hold speaker groups, at a cost on the demo (0.6: best dev EER 7.8% instead of 4.1%)
    bonafide_spread_target: float = 0.0
    repulsion: str = "all"  # all (smooth max over centers) or nearest (legacy)
    temperature: float = 0.1  # smooth maximum over centers = p-norm with p = 1 + 1/T (0: nearest only, inf: sum)
    ce_lambda: float = 1.0  # weight of the cluster term in "combined"
    ce_bonafide_weight: float = 0.0  # 0 = from class frequencies; else the bonafide class weight
    score: str = "cluster"  # detection score for "combined": cluster, ce, or sum (z-normalised)


@dataclass
class CentersConfig:
    method: str = "kmeans"  # kmeans (refit each refresh) or online (EMA per step); seed default kmeans
    refresh_every: int = 1  # epochs between k-means refreshes
    init_max_utterances: int = 2000  # cap on bonafide utterances for the initial pass
    # k-means refits use an eval-mode pass over this many bonafide training utterances (a fixed, seeded sample):
    # 2000 is ~80% of ASVspoof 2019 LA train's bonafide and ~2% of an XLS-R epoch's compute (cbl-search bench),
    # and enough for K <= 20 centers of ~100 utterances each
    refit_max_utterances: int = 2000
    # epochs before the first refit (the initial centers are kept until then); 0 = refit after every epoch
    warmup_epochs: int = 0
    # each refit moves a center this fraction of the way to its matched k-means center: full jumps (1.0) every
    # epoch re-placed 5-9 of 10 centers per epoch on the demo and put them among the spoofs (spoof cosine
    # 0.95-0.99 to the nearest center); 0.2 keeps a target the model can learn while following the bonafide
    refit_step: float = 0.2
    refit_trim: bool = True  # refits leave out bonafide within loss.margin of no center (already in spoof territory)
    ema_momentum: float = 0.99  # online centers: c <- m c + (1 - m) mean(assigned)
    seed: int = 0  # k-means++ seeding


@dataclass
class OptimConfig:
    lr: float = 1.0e-5  # SSL front-end learning rate (fine-tuning XLS-R wants it small)
    head_lr: float = 1.0e-3  # pooling + projection + classifier learning rate
    weight_decay: float = 1.0e-4
    schedule: str = "cosine"  # cosine decay over all epochs, or constant
    warmup_epochs: int = 0
    grad_clip: float = 5.0  # 0 disables clipping
    grad_accum: int = 1  # optimizer step every N batches


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto picks CUDA when available
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    num_threads: int = 0  # torch CPU threads; 0 = the run's CPU allotment
    max_steps_per_epoch: int = 0  # 0 = full epoch; a cap for smoke runs
    # frozen-feature cache: with model.freeze_ssl, compute the front-end's output once per utterance and
    # reuse it every epoch and in every trial of a sweep (needs data.train_crop=fixed, data.rawboost_algo=0)
    feature_cache: bool = False
    feature_cache_dir: str = ""  # "" = <run folder>/feature_cache, or <experiment>/feature_cache in a sweep


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    centers: CentersConfig = field(default_factory=CentersConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- rules
# Enum and range rules live in one table so that validation, the search-space
# checker and the docs read the same facts.
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.corpus": CORPORA,
    "data.eval_mode": EVAL_MODES,
    "data.train_crop": TRAIN_CROPS,
    "model.layer_mode": LAYER_MODES,
    "model.pooling": POOLINGS,
    "loss.type": LOSS_TYPES,
    "loss.repulsion": REPULSION_MODES,
    "loss.attraction": ATTRACTION_MODES,
    "loss.score": COMBINED_SCORES,
    "centers.method": CLUSTER_METHODS,
    "optim.schedule": LR_SCHEDULES,
    "train.device": DEVICES,
}
# (low, high, low_inclusive): None means unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "data.sample_rate": (1, None, True),
    "data.max_len": (1, None, True),
    "data.eval_window": (1, None, True),
    "data.eval_max_len": (1000, None, True),
    "data.rawboost_algo": (0, 8, True),
    "data.augment_copies": (0, None, True),
    "data.num_workers": (-1, None, True),
    "data.max_train_utterances": (0, None, True),
    "data.demo_utterances": (20, None, True),
    "data.demo_seconds": (0.25, 30.0, True),
    "model.embedding_dim": (2, None, True),
    "loss.num_clusters": (1, None, True),
    "loss.alpha": (0, None, True),
    "loss.margin": (-1.0, 1.0, True),
    "loss.bonafide_margin": (-1.0, 1.0, True),
    "loss.spread_weight": (0, None, True),
    "loss.spread_target": (0, 1.0, True),
    "loss.bonafide_spread_target": (0, 1.0, True),
    "loss.temperature": (0, None, False),
    "loss.ce_lambda": (0, None, True),
    "loss.ce_bonafide_weight": (0, None, True),
    "centers.refresh_every": (1, None, True),
    "centers.init_max_utterances": (1, None, True),
    "centers.refit_max_utterances": (1, None, True),
    "centers.warmup_epochs": (0, None, True),
    "centers.refit_step": (0, 1.0, False),
    "centers.ema_momentum": (0, 1.0, True),
    "optim.lr": (0, None, False),
    "optim.head_lr": (0, None, False),
    "optim.weight_decay": (0, None, True),
    "optim.warmup_epochs": (0, None, True),
    "optim.grad_clip": (0, None, True),
    "optim.grad_accum": (1, None, True),
    "train.epochs": (1, None, True),
    "train.batch_size": (1, None, True),
    "train.eval_batch_size": (1, None, True),
    "train.num_threads": (0, None, True),
    "train.max_steps_per_epoch": (0, None, True),
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flat_keys(config: ExperimentConfig | None = None) -> dict[str, type]:
    """Every dotted key of the experiment config with its Python type."""
    out: dict[str, type] = {}
    for section in dataclasses.fields(ExperimentConfig):
        section_cls = _field_types(ExperimentConfig)[section.name]
        for name, typ in _field_types(section_cls).items():
            out[f"{section.name}.{name}"] = typ
    return out


_KEYS = flat_keys()


def suggest_key(key: str, candidates: typing.Iterable[str] | None = None) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    pool = list(candidates if candidates is not None else _KEYS)
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    if not close:
        # a bare field name ("num_clusters") maps to its dotted key
        close = [k for k in pool if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _where(source: str | None, lines: LineMap | None, key: str) -> str:
    if not source:
        return ""
    line = lines.get(key) if lines else None
    return f"{source}:{line}: " if line else f"{source}: "


def check_key(key: str, where: str = "") -> type:
    """Return the type of a dotted key, or raise ConfigError naming it with a suggestion.

    ``where`` prefixes the message, e.g. ``"space.yaml:12: "``.
    """
    if key not in _KEYS:
        raise ConfigError(f"{where}unknown key '{key}'{suggest_key(key)}")
    return _KEYS[key]


def _parse_text(text: str, typ: type) -> Any:
    """Command-line text to a value of ``typ``; unparseable text is returned as is (and rejected later)."""
    if typ is str:
        return text
    stripped = text.strip()
    if typ is bool:
        return {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}.get(
            stripped.lower(), text
        )
    for parse in (int, float) if typ is int else (float,):
        try:
            return parse(stripped)
        except ValueError:
            continue
    return text


def coerce_value(key: str, value: Any, *, from_string: bool = False, where: str = "") -> Any:
    """Convert ``value`` to the type of ``key`` and check enum and range rules.

    ``from_string`` parses command-line text (``--set loss.alpha=2``), so
    ``true``/``2``/``1e-4`` mean what they look like.
    """
    typ = _KEYS[key]
    if from_string and isinstance(value, str):
        value = _parse_text(value, typ)
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[typ]
    bad = ConfigError(f"{where}key '{key}': expected {expected}, got {value!r}")
    if typ is bool:
        if not isinstance(value, bool):
            raise bad
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}key '{key}': expected a finite number, got {value!r}")
    elif typ is str:
        if not isinstance(value, str):
            raise bad
    if key in _CHOICES and value not in _CHOICES[key]:
        options = ", ".join(_CHOICES[key])
        raise ConfigError(f"{where}key '{key}': unknown value {value!r}, expected one of: {options}")
    if key in _RANGES:
        low, high, low_inclusive = _RANGES[key]
        if low is not None and (value < low or (value == low and not low_inclusive)):
            op = ">=" if low_inclusive else ">"
            raise ConfigError(f"{where}key '{key}' is {value!r}, but must be {op} {low}")
        if high is not None and value > high:
            raise ConfigError(f"{where}key '{key}' is {value!r}, but must be <= {high}")
    return value


def allowed_values(key: str) -> tuple[str, ...] | None:
    """The enum values of a key, or None when it is not an enum."""
    return _CHOICES.get(key)


def _flatten(data: Mapping[str, Any], source: str | None, lines: LineMap | None) -> dict[str, Any]:
    """Nested ``{section: {field: v}}`` and/or dotted ``{"section.field": v}`` -> dotted dict."""
    flat: dict[str, Any] = {}
    for top, value in data.items():
        top = str(top)
        if "." in top:
            flat[top] = value
            continue
        if isinstance(value, Mapping):
            for name, inner in value.items():
                flat[f"{top}.{name}"] = inner
        else:
            where = _where(source, lines, top)
            if top in {s.name for s in dataclasses.fields(ExperimentConfig)}:
                raise ConfigError(f"{where}key '{top}': expected a mapping of settings, got {value!r}")
            raise ConfigError(f"{where}unknown key '{top}'{suggest_key(top)}")
    return flat


def apply_overrides(
    config: ExperimentConfig,
    values: Mapping[str, Any],
    *,
    source: str | None = None,
    lines: LineMap | None = None,
    from_string: bool = False,
) -> ExperimentConfig:
    """Return a copy of ``config`` with ``values`` (nested or dotted keys) applied and validated."""
    new = copy_config(config)
    for key, value in _flatten(values, source, lines).items():
        check_key(key, _where(source, lines, key))
        section, name = key.split(".", 1)
        coerced = coerce_value(key, value, from_string=from_string, where=_where(source, lines, key))
        setattr(getattr(new, section), name, coerced)
    return new


def copy_config(config: ExperimentConfig) -> ExperimentConfig:
    return config_from_dict(config_to_dict(config), validate_values=False)


def config_to_dict(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any], *, validate_values: bool = True) -> ExperimentConfig:
    """Defaults overridden by ``data`` (nested or dotted keys)."""
    if not validate_values:
        config = ExperimentConfig()
        for key, value in _flatten(data, None, None).items():
            section, name = key.split(".", 1)
            setattr(getattr(config, section), name, value)
        return config
    return apply_overrides(ExperimentConfig(), data)


def parse_set_options(items: typing.Iterable[str]) -> dict[str, str]:
    """``["loss.alpha=2", ...]`` -> ``{"loss.alpha": "2"}``; raises ConfigError on a bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.alpha=2.0")
        check_key(key, "--set: ")
        out[key] = value
    return out


# keys holding a filesystem path (model.ssl only when it is written as one: ./dir, ../dir, ~/dir)
PATH_KEYS = ("data.root", "data.train_protocol", "data.dev_protocol", "data.eval_protocol", "train.feature_cache_dir")


def looks_like_local_path(name: str) -> bool:
    """``model.ssl`` written as a path (``./x``, ``~/x``, ``/x``, ``a/b/c``) rather than a hub name (``org/model``)."""
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1


def absolute_paths(config: ExperimentConfig, base_dir: str | os.PathLike[str]) -> ExperimentConfig:
    """Relative path values made absolute against ``base_dir`` (the folder the command ran in).

    A sweep's trials run in their own folders (Ray changes the working directory),
    on any node: a path relative to where the user typed the command must not
    change meaning there.
    """
    new = copy_config(config)
    ssl = config.model.ssl
    # model.ssl is a hub name unless written as a path or naming a folder that exists here
    ssl_is_path = looks_like_local_path(ssl) or (bool(ssl) and os.path.isdir(os.path.join(base_dir, ssl)))
    keys = list(PATH_KEYS) + (["model.ssl"] if ssl_is_path else [])
    for key in keys:
        section, name = key.split(".", 1)
        value = getattr(getattr(new, section), name)
        if value and not os.path.isabs(os.path.expanduser(value)):
            setattr(getattr(new, section), name, os.path.normpath(os.path.join(base_dir, value)))
        elif value:
            setattr(getattr(new, section), name, os.path.expanduser(value))
    return new


def load_config(path: str | os.PathLike[str] | None = None) -> ExperimentConfig:
    """Defaults overridden by the YAML file at ``path`` (see cbl.profiles for the full order)."""
    config = ExperimentConfig()
    if path is not None:
        data, lines = load_yaml(path, expect_mapping=True)
        config = apply_overrides(config, data, source=str(path), lines=lines)
    return config


def save_config(config: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically); load_config(path) gives it back."""
    return atomic_write_text(path, dump_yaml(config_to_dict(config)))
