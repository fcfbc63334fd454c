"""The detector: SSL front-end (wav2vec2 / XLS-R), frame pooling, embedding and CE heads."""

from cbl.model.detector import DetectorOutput, SpoofDetector, build_model, param_groups
from cbl.model.pooling import POOLING, AttentiveStatsPooling, MaxPooling, MeanPooling, build_pooling
from cbl.model.ssl import TINY_NAME, SSLFrontEnd, load_wav2vec2, tiny_wav2vec2_config

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
    "TINY_NAME",
    "SSLFrontEnd",
    "load_wav2vec2",
    "tiny_wav2vec2_config",
]
