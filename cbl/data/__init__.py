"""Data: protocol readers, audio loading, RawBoost, the synthetic demo corpus, torch loaders.

Label convention everywhere: 1 = bonafide, 0 = spoof.
"""

from cbl.data.audio import audio_frames, crop_or_tile, fixed_window, load_audio, pad_batch
from cbl.data.dataset import (
    EvalDataset,
    LengthBucketSampler,
    TrainDataset,
    batch_fields,
    collate,
    make_eval_loader,
    make_train_loader,
    seed_worker,
)
from cbl.data.labels import check_labels, class_weights, class_weights_from_labels, training_class_weights
from cbl.data.demo import SEEN_ATTACKS, UNSEEN_ATTACKS, cache_dir, demo_root, generate_demo_corpus
from cbl.data.protocols import (
    BONAFIDE_WORDS,
    SPOOF_WORDS,
    Protocol,
    Record,
    read_asvspoof2019,
    read_asvspoof2021,
    read_folder_protocol,
    read_in_the_wild,
)
from cbl.data.rawboost import RAWBOOST_ALGORITHMS, RawBoostParams, apply_rawboost
from cbl.data.splits import SPLIT_NAMES, load_split, read_protocol, subsample_train

__all__ = [
    "BONAFIDE_WORDS",
    "SPOOF_WORDS",
    "Record",
    "Protocol",
    "read_asvspoof2019",
    "read_asvspoof2021",
    "read_in_the_wild",
    "read_folder_protocol",
    "SPLIT_NAMES",
    "load_split",
    "read_protocol",
    "subsample_train",
    "load_audio",
    "audio_frames",
    "crop_or_tile",
    "fixed_window",
    "pad_batch",
    "RAWBOOST_ALGORITHMS",
    "RawBoostParams",
    "apply_rawboost",
    "SEEN_ATTACKS",
    "UNSEEN_ATTACKS",
    "cache_dir",
    "demo_root",
    "generate_demo_corpus",
    "TrainDataset",
    "EvalDataset",
    "LengthBucketSampler",
    "batch_fields",
    "collate",
    "check_labels",
    "class_weights",
    "class_weights_from_labels",
    "training_class_weights",
    "make_train_loader",
    "make_eval_loader",
    "seed_worker",
]
