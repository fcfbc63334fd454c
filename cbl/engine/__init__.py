"""A single run: training (``trainer``), the state it carries (``state``), its folder (``run_dir``), checkpoints,
inference shared by training, evaluation and the report (``inference``), scoring with a saved checkpoint
(``evaluate``), the frozen-feature cache (``feature_cache``, ``feature_source``), reporters (``reporting``) and
where it runs (``runtime``). Nothing here knows of sweeps: a trial is one :func:`fit`.
"""

from cbl.engine.checkpoint import CheckpointError, checkpoint_signature, load_checkpoint, save_checkpoint
from cbl.engine.evaluate import (
    EvalResult,
    LoadedModel,
    asv_option_scores,
    evaluate_records,
    expand_audio_paths,
    load_model,
    records_for,
    result_tables,
    score_audio_files,
    score_records,
)
from cbl.engine.feature_cache import cache_root, check_cache_config, describe_cache, format_cache_line
from cbl.engine.inference import embed, forward_batch, forward_chunked, score_embeddings, score_norm
from cbl.engine.reporting import ConsoleReporter
from cbl.engine.run_dir import read_history
from cbl.engine.runtime import (
    apply_determinism,
    autocast_for,
    available_cpus,
    pick_device,
    resolve_workers,
    set_threads,
)
from cbl.engine.state import TrainState
from cbl.engine.trainer import FitResult, Reporter, TrainingDiverged, fit, learning_rate_scale

__all__ = [
    "CheckpointError",
    "ConsoleReporter",
    "EvalResult",
    "FitResult",
    "LoadedModel",
    "Reporter",
    "TrainState",
    "TrainingDiverged",
    "apply_determinism",
    "asv_option_scores",
    "autocast_for",
    "available_cpus",
    "cache_root",
    "check_cache_config",
    "checkpoint_signature",
    "describe_cache",
    "embed",
    "evaluate_records",
    "expand_audio_paths",
    "fit",
    "format_cache_line",
    "forward_batch",
    "forward_chunked",
    "learning_rate_scale",
    "load_checkpoint",
    "load_model",
    "pick_device",
    "read_history",
    "records_for",
    "resolve_workers",
    "result_tables",
    "save_checkpoint",
    "score_audio_files",
    "score_embeddings",
    "score_norm",
    "score_records",
    "set_threads",
]
