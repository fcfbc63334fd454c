"""The detector: speech SSL front-end (wav2vec2 / XLS-R / MMS, HuBERT, WavLM, data2vec-audio), frame pooling,
embedding and CE heads."""

from cbl.model.detector import DetectorOutput, SpoofDetector, build_model, param_groups
from cbl.model.loading import SUPPORTED_MODEL_TYPES, TINY_NAME, load_ssl_model, load_wav2vec2, tiny_wav2vec2_config
from cbl.model.pooling import POOLING, AttentiveStatsPooling, MaxPooling, MeanPooling, Pooling, build_pooling
from cbl.model.ssl import SSLFrontEnd, normalize_waveform

__all__ = [
    "POOLING",
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAME",
    "AttentiveStatsPooling",
    "DetectorOutput",
    "MaxPooling",
    "MeanPooling",
    "Pooling",
    "SSLFrontEnd",
    "SpoofDetector",
    "build_model",
    "build_pooling",
    "load_ssl_model",
    "load_wav2vec2",
    "normalize_waveform",
    "param_groups",
    "tiny_wav2vec2_config",
]
