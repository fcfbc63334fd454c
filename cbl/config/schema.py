"""The experiment configuration's schema: dataclasses whose defaults say why, and the enum and range rules.

The rules live in two tables (:data:`CHOICES`, :data:`RANGES`) so that validation
(:mod:`cbl.config.overrides`), the search-space checker and the command line's
choice lists read the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ATTRACTION_MODES",
    "CHOICES",
    "CLUSTER_METHODS",
    "COMBINED_SCORES",
    "CORPORA",
    "DEVICES",
    "EVAL_MODES",
    "LAYER_MODES",
    "LOSS_TYPES",
    "LR_SCHEDULES",
    "NORMALIZE_INPUT",
    "POOLINGS",
    "PROTOCOL_FORMATS",
    "RANGES",
    "REPULSION_MODES",
    "SPLITS",
    "TRAIN_CROPS",
    "CentersConfig",
    "DataConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
]

# protocol formats a file on disk can have (evaluate --corpus, final-eval --corpus); "demo" is the built-in corpus,
# which is written in the asvspoof2019_la format
PROTOCOL_FORMATS = ("asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df", "in_the_wild", "folder")
CORPORA = (*PROTOCOL_FORMATS, "demo")
SPLITS = ("train", "dev", "eval")
POOLINGS = ("mean", "max", "attention")
LOSS_TYPES = ("cluster_only", "combined", "ce_only")
CLUSTER_METHODS = ("kmeans", "online")
LAYER_MODES = ("last", "index", "weighted")
NORMALIZE_INPUT = ("auto", "true", "false")
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
    # RawBoost on the whole utterance, then the crop/tile to max_len, as the published SSL + RawBoost recipe
    # does (false: on the max_len crop, cheaper for long utterances but not the published recipe)
    rawboost_before_crop: bool = True
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
    # recompute each encoder layer's activations in the backward pass instead of keeping them (transformers'
    # gradient_checkpointing_enable): the same gradients, about a third more compute, far less GPU memory
    gradient_checkpointing: bool = False
    pooling: str = "mean"  # frame pooling: mean, max, attention (attentive statistics)
    embedding_dim: int = 256  # L2-normalised embedding the cluster loss works on
    # Fine-tuning regularisers, replacing the checkpoint's own values (XLS-R's config.json says layerdrop 0.1,
    # mask_time_prob 0.075: settings for ASR fine-tuning). LayerDrop off: every step trains the whole encoder,
    # and the layer that `index`/`weighted` read always sits on the same stack below it
    layerdrop: float = 0.0
    # SpecAugment off, as in the published SSL + RawBoost anti-spoofing recipe (Tak et al. 2022: XLS-R called with
    # mask=False): masking frames hides exactly the short artefacts a spoofing detector must find
    mask_time_prob: float = 0.0
    mask_feature_prob: float = 0.0
    # zero mean, unit variance per utterance before the SSL model: "auto" = the checkpoint's do_normalize
    # (preprocessor_config.json; none there, as for "tiny": off), or "true" / "false"
    normalize_input: str = "auto"


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
    # bonafide pull: "distance" = a soft linear pull on the chord distance to the nearest center (its slope ~1
    # beyond sqrt(2 - 2 bonafide_margin), cbl/losses.py), "margin" = relu(bonafide_margin - cos) (OC-Softmax's
    # m_real 0.9: a bonafide close enough to its center is left alone), "to_center" = 1 - cos (the seed's pull
    # to cosine 1)
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
    # repeatable GPU runs: torch deterministic algorithms, cuDNN deterministic (no benchmark), cuBLAS workspace
    # config; off by default: deterministic kernels can be slower, and an op without one stops the run
    deterministic: bool = False
    # frozen-feature cache: with model.freeze_ssl, compute the front-end's output once per utterance and
    # reuse it every epoch and in every trial of a sweep (needs data.train_crop=fixed, data.rawboost_algo=0)
    feature_cache: bool = False
    feature_cache_dir: str = ""  # "" = <run folder>/feature_cache, or <experiment>/feature_cache in a sweep
    # bootstrap resamples of the dev EER's 95% CI each epoch (dev_eer_low/high, by speaker when the protocol
    # names them); 1000 keeps the interval's ends stable to ~0.1 point; 0 = no interval
    dev_ci_resamples: int = 1000
    # frozen parameters (feature encoder, or the whole SSL model with freeze_ssl) are written once here, by the
    # hash of their weights, instead of into every checkpoint: "" = <run folder>/frozen, <experiment>/frozen in a sweep
    frozen_dir: str = ""
    # false: a running trial holds one resume checkpoint (last.pt is read back and checked before it replaces the
    # old one, so a kill leaves a loadable one); true keeps the old last.pt as previous.pt as well, a fallback for
    # storage that may damage files after they are written (one more last.pt-sized file per running trial)
    keep_previous_checkpoint: bool = False


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    centers: CentersConfig = field(default_factory=CentersConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Enum and range rules live in one table so that validation, the search-space
# checker and the docs read the same facts.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.corpus": CORPORA,
    "data.eval_mode": EVAL_MODES,
    "data.train_crop": TRAIN_CROPS,
    "model.layer_mode": LAYER_MODES,
    "model.normalize_input": NORMALIZE_INPUT,
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
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
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
    "model.layerdrop": (0, 1.0, True),
    "model.mask_time_prob": (0, 1.0, True),
    "model.mask_feature_prob": (0, 1.0, True),
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
    "train.dev_ci_resamples": (0, None, True),
    "train.batch_size": (1, None, True),
    "train.eval_batch_size": (1, None, True),
    "train.num_threads": (0, None, True),
    "train.max_steps_per_epoch": (0, None, True),
}
