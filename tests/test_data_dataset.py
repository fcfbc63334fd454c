"""Datasets, collate, loaders, sampling and class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cbl.config import DataConfig
from cbl.data.audio import load_audio
from cbl.data.dataset import (
    EvalDataset,
    LengthBucketSampler,
    TrainDataset,
    make_eval_loader,
    make_train_loader,
)
from cbl.data.labels import class_weights, training_class_weights
from cbl.data.protocols import Record
from cbl.errors import ProtocolError


def make_records(
    folder: Path, count: int = 20, bonafide_every: int = 5, lengths: tuple[int, ...] = (1200, 3000, 700)
) -> list[Record]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        path = folder / f"utt{i:03d}.flac"
        sf.write(path, (0.1 * rng.standard_normal(lengths[i % len(lengths)])).astype(np.float32), 16000)
        label = int(i % bonafide_every == 0)
        records.append(Record(f"utt{i:03d}", str(path), label, "-" if label else f"A0{i % 3 + 1}", "spk"))
    return records


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return make_records(tmp_path_factory.mktemp("audio"))


def test_class_weights_favour_bonafide_minority() -> None:
    records = [Record(f"u{i}", "/x", int(i < 10), "-", "s") for i in range(100)]
    weights = class_weights(records)
    assert weights.shape == (2,) and weights.dtype == torch.float32
    assert weights[1] > weights[0]  # index 1 = bonafide, the minority
    assert weights.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])  # N / (2 N_c)
    assert (weights[1] / weights[0]).item() == pytest.approx(9.0)
    with pytest.raises(ProtocolError, match="the records contain no bonafide utterance"):
        class_weights(records[10:])


def test_train_loader_shapes(records: list[Record]) -> None:
    data = DataConfig(max_len=2000)
    batch = next(iter(make_train_loader(records, data, batch_size=8, seed=0)))
    assert batch["audio"].shape == (8, 2000) and batch["audio"].dtype == torch.float32
    assert batch["attention_mask"] is None  # fixed-length crops need no mask
    assert batch["label"].shape == (8,) and batch["label"].dtype == torch.long
    assert batch["index"].dtype == torch.long and len(batch["utt_id"]) == len(batch["attack"]) == 8
    for i, utt in zip(batch["index"].tolist(), batch["utt_id"], strict=True):
        assert records[i].utt_id == utt and records[i].label == batch["label"][batch["utt_id"].index(utt)]


def test_train_items_are_reproducible_per_seed_and_epoch(records: list[Record]) -> None:
    data = DataConfig(max_len=500, rawboost_algo=4)
    a, b = TrainDataset(records, data, seed=1), TrainDataset(records, data, seed=1)
    assert torch.equal(a[1]["audio"], b[1]["audio"])
    b.set_epoch(1)
    assert not torch.equal(a[1]["audio"], b[1]["audio"])
    first = [batch["utt_id"] for batch in make_train_loader(records, data, batch_size=4, seed=3, epoch=2)]
    again = [batch["utt_id"] for batch in make_train_loader(records, data, batch_size=4, seed=3, epoch=2)]
    other = [batch["utt_id"] for batch in make_train_loader(records, data, batch_size=4, seed=3, epoch=3)]
    assert first == again and first != other


def test_workers_give_the_same_batches(records: list[Record]) -> None:
    data = DataConfig(max_len=800, rawboost_algo=2)
    single = list(make_train_loader(records, data, batch_size=5, seed=0))
    data.num_workers = 2
    multi = list(make_train_loader(records, data, batch_size=5, seed=0))
    for x, y in zip(single, multi, strict=True):
        assert x["utt_id"] == y["utt_id"] and torch.equal(x["audio"], y["audio"])


def test_rawboost_only_in_training(records: list[Record]) -> None:
    data = DataConfig(max_len=1200, rawboost_algo=3)
    plain = load_audio(records[0].path)
    assert not np.allclose(TrainDataset(records, data, seed=0)[0]["audio"].numpy(), plain)
    np.testing.assert_array_equal(EvalDataset(records, data)[0]["audio"].numpy(), plain)


def test_rawboost_acts_on_the_whole_utterance_then_the_crop(records: list[Record]) -> None:
    """The published recipe's order: augment the utterance, then crop (or tile) it to max_len."""
    from cbl.data.audio import crop_or_tile
    from cbl.data.rawboost import apply_rawboost

    data = DataConfig(max_len=2000, rawboost_algo=4)
    long = 1  # 3000 samples: cropped at a random offset
    dataset = TrainDataset(records, data, seed=5)
    dataset.set_epoch(2)
    rng = np.random.default_rng([5, 2, long])
    expected = crop_or_tile(apply_rawboost(load_audio(records[long].path), 4, rng), 2000, rng)
    np.testing.assert_array_equal(dataset[long]["audio"].numpy(), expected)
    # a 700-sample utterance tiled to 2000: augmented first, so the tiles repeat exactly
    short = 2
    tiled = TrainDataset(records, DataConfig(max_len=2000, rawboost_algo=2), seed=0)[short]["audio"].numpy()
    np.testing.assert_array_equal(tiled[:700], tiled[700:1400])
    after = DataConfig(max_len=2000, rawboost_algo=2, rawboost_before_crop=False)
    cropped_first = TrainDataset(records, after, seed=0)[short]["audio"].numpy()
    assert not np.array_equal(cropped_first[:700], cropped_first[700:1400])  # impulses drawn over the tiles


def test_balanced_sampling_is_about_half_bonafide(tmp_path: Path) -> None:
    records = make_records(tmp_path, count=50, bonafide_every=10, lengths=(100,))
    data = DataConfig(max_len=100, balanced_sampling=True)
    loaders = [make_train_loader(records, data, batch_size=25, seed=0, epoch=epoch) for epoch in range(8)]
    labels = torch.cat([batch["label"] for loader in loaders for batch in loader])
    assert labels.numel() == 400
    assert 0.4 < labels.float().mean().item() < 0.6  # 10% in the protocol
    data.balanced_sampling = False
    plain = torch.cat([b["label"] for b in make_train_loader(records, data, batch_size=25, seed=0)])
    assert plain.float().mean().item() == pytest.approx(0.1)


@pytest.mark.parametrize("balanced", [False, True])
def test_bonafide_counts_once_whether_batches_or_weights_balance_it(tmp_path: Path, balanced: bool) -> None:
    """Effective bonafide weight = (bonafide drawn x its CE weight) / (spoof drawn x its CE weight) ~ 1.

    Balanced batches with frequency weights on top would give 9 here (10% bonafide).
    """
    records = make_records(tmp_path, count=50, bonafide_every=10, lengths=(100,))
    data = DataConfig(max_len=100, balanced_sampling=balanced)
    weights = training_class_weights(records, data)
    assert weights.tolist() == ([1.0, 1.0] if balanced else pytest.approx([50 / 90, 50 / 10]))
    labels = torch.cat(
        [
            batch["label"]
            for epoch in range(20)
            for batch in make_train_loader(records, data, batch_size=25, seed=0, epoch=epoch)
        ]
    )
    bonafide, spoof = int((labels == 1).sum()), int((labels == 0).sum())
    effective = (bonafide * weights[1]) / (spoof * weights[0])
    assert effective.item() == pytest.approx(1.0, abs=0.15)


def test_eval_loader_buckets_by_length_and_covers_everything(records: list[Record]) -> None:
    data = DataConfig(eval_mode="full")
    batches = list(make_eval_loader(records, data, batch_size=6))
    seen = [utt for b in batches for utt in b["utt_id"]]
    assert sorted(seen) == sorted(r.utt_id for r in records)
    lengths = [b["audio"].shape[1] for b in batches]
    assert lengths == sorted(lengths, reverse=True)
    by_id = {r.utt_id: r for r in records}
    for batch in batches:
        if batch["attention_mask"] is not None:
            for row, utt in enumerate(batch["utt_id"]):
                assert batch["attention_mask"][row].sum().item() == sf.info(by_id[utt].path).frames
    assert any(b["attention_mask"] is not None for b in batches)
    assert batches[0]["attention_mask"] is None  # a batch of equal lengths needs no mask


def test_eval_window_mode(records: list[Record]) -> None:
    data = DataConfig(eval_mode="window", eval_window=1000)
    batch = next(iter(make_eval_loader(records, data, batch_size=20)))
    assert batch["audio"].shape == (20, 1000) and batch["attention_mask"] is None


def test_length_bucket_sampler() -> None:
    sampler = LengthBucketSampler([5, 50, 10, 50, 1], batch_size=2)
    assert list(sampler) == [[1, 3], [2, 0], [4]] and len(sampler) == 3
    with pytest.raises(ValueError, match="batch_size is 0, but must be >= 1"):
        LengthBucketSampler([1], 0)
