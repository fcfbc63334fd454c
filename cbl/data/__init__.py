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
from cbl.data.demo import SEEN_ATTACKS, UNSEEN_ATTACKS, cache_dir, demo_root, generate_demo_corpus
from cbl.data.labels import check_labels, class_weights, class_weights_from_labels, training_class_weights
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
    "RAWBOOST_ALGORITHMS",
    "SEEN_ATTACKS",
    "SPLIT_NAMES",
    "SPOOF_WORDS",
    "UNSEEN_ATTACKS",
    "EvalDataset",
    "LengthBucketSampler",
    "Protocol",
    "RawBoostParams",
    "Record",
    "TrainDataset",
    "apply_rawboost",
    "audio_frames",
    "batch_fields",
    "cache_dir",
    "check_labels",
    "class_weights",
    "class_weights_from_labels",
    "collate",
    "crop_or_tile",
    "demo_root",
    "fixed_window",
    "generate_demo_corpus",
    "load_audio",
    "load_split",
    "make_eval_loader",
    "make_train_loader",
    "pad_batch",
    "read_asvspoof2019",
    "read_asvspoof2021",
    "read_folder_protocol",
    "read_in_the_wild",
    "read_protocol",
    "seed_worker",
    "subsample_train",
    "training_class_weights",
]
