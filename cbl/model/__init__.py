"""The detector: speech SSL front-end (wav2vec2 / XLS-R / MMS, HuBERT, WavLM, data2vec-audio), frame pooling,
embedding and CE heads."""

from cbl.model.detector import DetectorOutput, SpoofDetector, build_model, param_groups
from cbl.model.pooling import POOLING, AttentiveStatsPooling, MaxPooling, MeanPooling, build_pooling
from cbl.model.loading import SUPPORTED_MODEL_TYPES, TINY_NAME, load_ssl_model, load_wav2vec2, tiny_wav2vec2_config
from cbl.model.ssl import SSLFrontEnd, normalize_waveform

__all__ = [
    "DetectorOutput",
    "SpoofDetector",
    "build_model",
    "param_groups",
    "POOLING",
    "AttentiveStatsPooling",
    "MaxPooling",
    "MeanPooling",
    "build_pooling",
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAME",
    "SSLFrontEnd",
    "load_ssl_model",
    "load_wav2vec2",
    "normalize_waveform",
    "tiny_wav2vec2_config",
]
