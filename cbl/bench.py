"""``cbl-search bench``: what the framework adds to the cost of training, as one table of side-by-side ratios.

Every row compares two things measured in the same run on the same machine (a
ratio of two noisy timings taken minutes apart says little), on the built-in demo
corpus with the tiny model; with a GPU, the model-bound rows are repeated with a
wav2vec2-base-sized random-init model (no download). The numbers go to a JSON
file too, with the machine they came from. A benchmark, not a test: nothing here
asserts a timing.

Each measurement is a function ``measure_<name>(ctx) -> list[Row]`` registered in
:data:`MEASUREMENTS`; ``--only`` picks some of them by name.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cbl.errors import CblError, UsageError

__all__ = ["MEASUREMENTS", "SIZES", "BenchContext", "Row", "Sizes", "format_table", "machine_info", "parse_only",
           "replay_search", "run_bench"]


# --------------------------------------------------------------------------- sizes, rows, context
@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``quick`` fits the 2-core CPU machine in a few minutes."""

    name: str
    utterances: int  # demo utterances per split (train/dev/eval)
    seconds: float  # demo utterance length
    epochs: int  # epochs of each timed fit (the first one is dropped from the medians)
    pairs: int  # A/B pairs for the cluster-loss comparison (ABAB...)
    loader_batches: int  # batches timed for loader and model throughput
    refresh_sizes: tuple[int, ...]  # bonafide embeddings per center refresh
    grid: tuple[tuple[str, tuple[Any, ...]], ...]  # the space of the search-efficiency benchmark
    grid_epochs: int  # max_t of that benchmark
    replay_seeds: int  # sampler seeds per replayed variant
    eval_utterances: int  # utterances of the evaluation-throughput set
    eval_max_seconds: float  # its lengths are log-uniform in [1 s, this] (or [0.25 s, this] when < 1)
    ray_epochs: int  # epochs of the 1-trial sweep and its direct twin


_GRID_12 = (("loss.type", ("cluster_only", "combined", "ce_only")), ("model.pooling", ("mean", "max")),
            ("optim.lr", (1.0e-3, 3.0e-3)))
_GRID_18 = (("loss.type", ("cluster_only", "combined", "ce_only")), ("model.pooling", ("mean", "max")),
            ("optim.lr", (5.0e-4, 1.0e-3, 3.0e-3)))

SIZES: dict[str, Sizes] = {
    # for the tests: seconds, not a measurement
    "tiny": Sizes("tiny", utterances=24, seconds=0.25, epochs=2, pairs=1, loader_batches=2, refresh_sizes=(100, 200),
                  grid=(("loss.type", ("cluster_only", "ce_only")), ("model.pooling", ("mean", "max"))),
                  grid_epochs=3, replay_seeds=3, eval_utterances=8, eval_max_seconds=0.75, ray_epochs=2),
    "quick": Sizes("quick", utterances=160, seconds=0.5, epochs=3, pairs=2, loader_batches=10,
                   refresh_sizes=(1000, 5000, 25000), grid=_GRID_12, grid_epochs=6, replay_seeds=200,
                   eval_utterances=96, eval_max_seconds=8.0, ray_epochs=4),
    "full": Sizes("full", utterances=480, seconds=1.0, epochs=4, pairs=3, loader_batches=30,
                  refresh_sizes=(1000, 5000, 25000, 100000), grid=_GRID_18, grid_epochs=9, replay_seeds=500,
                  eval_utterances=320, eval_max_seconds=8.0, ray_epochs=6),
}

# ASHA as in search_spaces/ablation.yaml (grace 1, factor 3), with its concurrency (4 trials at a time)
ASHA_GRACE, ASHA_FACTOR, SEARCH_CONCURRENCY = 1, 3.0, 4
WITHIN_POINTS = 0.5  # "a configuration within 0.5 points (of EER, in %) of the grid's best"


@dataclass
class Row:
    """One line of the table: side A vs side B, their ratio, the target and whether it is met."""

    id: str
    what: str
    a_label: str
    a: float | None
    b_label: str
    b: float | None
    unit: str
    target: str = "report"  # "report": a number to know, no target
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.a is None or self.b is None or not self.b:
            return None
        return self.a / self.b


@dataclass
class BenchContext:
    """What every measurement gets: sizes, a scratch folder, the device, and where to say what it is doing."""

    sizes: Sizes
    work_dir: Path
    device: str = "cpu"
    echo: Callable[[str], None] = print
    threads: int = 1  # torch threads for every timed fit: the same on both sides, less noise on a shared CPU
    cache: dict[str, Any] = field(default_factory=dict)  # results shared between measurements

    @property
    def models(self) -> list[str]:
        """Model sizes for the model-bound rows: the tiny model, and a base-sized one where a GPU is present."""
        return ["tiny", "base"] if self.device == "cuda" else ["tiny"]


# --------------------------------------------------------------------------- configs
def demo_sets(ctx: BenchContext, model: str = "tiny", **extra: Any) -> list[str]:
    """``--set`` items for a demo run of ``ctx.sizes`` (on top of the ``--demo`` profile)."""
    s = ctx.sizes
    length = int(s.seconds * 16000)
    items = {
        "data.demo_utterances": s.utterances, "data.demo_seconds": s.seconds,
        "data.max_len": length, "data.eval_window": length, "train.epochs": s.epochs,
        "train.num_threads": ctx.threads, "train.device": ctx.device,
        "centers.init_max_utterances": min(64, s.utterances), "loss.num_clusters": 4 if s.name == "tiny" else 10,
    }
    if model == "base":
        # the real fine-tuning settings and crop length (the demo profile's are for a random tiny model)
        items.update({"model.ssl": str(_base_model_dir(ctx)), "model.embedding_dim": 256,
                      "model.freeze_feature_encoder": True, "optim.lr": 1.0e-5, "optim.head_lr": 1.0e-3,
                      "data.max_len": 64600})
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def demo_config(ctx: BenchContext, model: str = "tiny", **extra: Any):
    from cbl.profiles import resolve_config

    return resolve_config(None, demo_sets(ctx, model, **extra), demo=True)


def _base_model_dir(ctx: BenchContext) -> Path:
    """A wav2vec2-base-sized model with random weights, saved once (no hub access on these machines)."""
    folder = ctx.work_dir / "wav2vec2-base-random"
    if not (folder / "config.json").is_file():
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    return folder


def _epoch_seconds(run_dir: Path, key: str = "epoch_seconds") -> list[float]:
    """Per-epoch times of a run, without its first epoch (warm-up) when it has more than one.

    ``epoch_seconds`` leaves out the centers' refit pass (``refit_seconds``): its cost is
    row 4r's, so that row 1 compares the loss and the loop alone.
    """
    from cbl.train import read_history

    values = [float(h[key]) - float(h.get("refit_seconds", 0.0)) * (key == "epoch_seconds")
              for h in read_history(run_dir)]
    return values[1:] if len(values) > 1 else values


# --------------------------------------------------------------------------- 1. cluster loss vs ce_only
def measure_cluster_loss(ctx: BenchContext) -> list[Row]:
    """Time per epoch of cluster_only (k-means refresh every epoch) vs ce_only, alternated ABAB, medians.

    The refit pass is left out of the cluster side (measured on its own as row 4r).
    """
    from cbl.train import fit

    rows = []
    for model in ctx.models:
        times: dict[str, list[float]] = {"cluster_only": [], "ce_only": []}
        for pair in range(ctx.sizes.pairs):
            for loss in ("cluster_only", "ce_only"):
                ctx.echo(f"  [1] {model} {loss} run {pair + 1}/{ctx.sizes.pairs}")
                config = demo_config(ctx, model, **{"loss.type": loss, "centers.refresh_every": 1})
                with tempfile.TemporaryDirectory(dir=ctx.work_dir) as run_dir:
                    fit(config, None, run_dir)
                    times[loss] += _epoch_seconds(Path(run_dir))
        a, b = statistics.median(times["cluster_only"]), statistics.median(times["ce_only"])
        rows.append(Row("1" + ("b" if model == "base" else ""), f"time per epoch, {model} model: cluster_only + "
                        "k-means refresh (without the refit pass, row 4r) vs ce_only", "cluster", a, "ce_only", b,
                        "s", "ratio <= 1.05",
                        a / b <= 1.05, note=f"median of {len(times['ce_only'])} epochs per side, ABAB"))
    return rows


# --------------------------------------------------------------------------- 2 and 7. Ray trial, memory
_RAY_SPACE = """\
name: bench_ray
space:
  loss.type: {{grid: [cluster_only]}}
search: {{algorithm: grid}}
scheduler: {{name: none}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


def _sweep_and_direct(ctx: BenchContext) -> dict[str, Any]:
    """A 1-trial sweep (``cbl-search run`` in a subprocess) and the same config as ``cbl-search train``.

    Both are subprocesses so that each side starts cold alike and its peak memory
    is its own. Shared by measurements 2 and 7; run once.
    """
    if "sweep" in ctx.cache:
        return ctx.cache["sweep"]
    from cbl.config import save_config
    from cbl.data import load_split

    sets = demo_sets(ctx, **{"train.epochs": ctx.sizes.ray_epochs, "loss.type": "cluster_only"})
    config = demo_config(ctx, **{"train.epochs": ctx.sizes.ray_epochs, "loss.type": "cluster_only"})
    for split in ("train", "dev"):
        load_split(config.data, split)  # generate the demo corpus before either side starts its clock
    folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=ctx.work_dir))
    space = folder / "space.yaml"
    space.write_text(_RAY_SPACE.format(gpu=1 if ctx.device == "cuda" else 0))
    command = [sys.executable, "-m", "cbl.cli", "run", str(space), "--demo", "--storage", str(folder / "runs"),
               "--no-final-eval"] + [arg for item in sets for arg in ("--set", item)]
    ctx.echo("  [2/7] 1-trial sweep through Ray (cbl-search run)")
    sweep = _run_measured(command, folder / "sweep.log", spawns_children=True)
    trials = sorted((folder / "runs" / "bench_ray" / "trials").glob("*/metrics.jsonl"))
    if sweep["returncode"] != 0 or not trials:
        raise CblError(f"bench: the 1-trial sweep failed (exit {sweep['returncode']}); see {folder / 'sweep.log'}")
    save_config(config, folder / "direct.yaml")
    ctx.echo("  [2/7] the same configuration called directly (cbl-search train)")
    direct = _run_measured([sys.executable, "-m", "cbl.cli", "train", str(folder / "direct.yaml"), "--out",
                            str(folder / "direct"), "--no-progress"], folder / "direct.log")
    if direct["returncode"] != 0:
        raise CblError(f"bench: the direct training run failed (exit {direct['returncode']}); "
                       f"see {folder / 'direct.log'}")
    ctx.cache["sweep"] = {"sweep": sweep, "direct": direct, "trial_epochs": _epoch_seconds(trials[0].parent),
                          "direct_epochs": _epoch_seconds(folder / "direct")}
    return ctx.cache["sweep"]


def measure_ray_trial(ctx: BenchContext) -> list[Row]:
    """Time per epoch of a trial inside Ray Tune vs the same fit called directly (start-up excluded)."""
    result = _sweep_and_direct(ctx)
    a, b = statistics.median(result["trial_epochs"]), statistics.median(result["direct_epochs"])
    return [Row("2", "time per epoch: a trial inside Ray Tune vs the same fit called directly", "Ray trial", a,
                "direct fit", b, "s", "ratio <= 1.10", a / b <= 1.10,
                note=f"median of {len(result['trial_epochs'])} epochs per side (first dropped); start-up excluded")]


def measure_memory(ctx: BenchContext) -> list[Row]:
    """Peak resident memory of the sweep driver and of all the sweep's processes, vs one trial."""
    result = _sweep_and_direct(ctx)
    trial = result["direct"]["peak_self_mib"]
    return [
        Row("7a", "peak RSS: sweep driver (cbl-search run) vs one trial (cbl-search train)", "driver",
            result["sweep"]["peak_self_mib"], "trial", trial, "MiB"),
        Row("7b", "peak RSS: all processes of a 1-trial sweep (driver + Ray + trial) vs one trial", "sweep",
            result["sweep"]["peak_tree_mib"], "trial", trial, "MiB", note="peak of the summed PSS (shared pages "
            "split between processes) over the driver's process tree, sampled every 0.25 s"),
    ]


def _run_measured(command: list[str], log: Path, *, spawns_children: bool = False) -> dict[str, Any]:
    """Run ``command``; return its exit code, wall time, its own peak RSS and the peak summed RSS of its tree.

    A plain process's own peak is its rusage at exit (exact). A process that
    spawns others (Ray) gets the rusage of its reaped children mixed in, so its
    own peak is the sampled VmHWM instead.
    """
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    peak_self = peak_tree = 0
    while True:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_self = max(peak_self, _proc_kib(process.pid, "VmHWM"))
        peak_tree = max(peak_tree, sum(_proc_kib(p, "Pss", "smaps_rollup") for p in _process_tree(process.pid)))
        time.sleep(0.25)
    process.returncode = os.waitstatus_to_exitcode(status)
    if not spawns_children:
        peak_self = max(peak_self, rusage.ru_maxrss)  # KiB on Linux
    return {"returncode": process.returncode, "seconds": time.monotonic() - started,
            "peak_self_mib": peak_self / 1024, "peak_tree_mib": peak_tree / 1024}


def _proc_kib(pid: int, field_name: str, file: str = "status") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (or ``smaps_rollup``); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (Ray's raylet, GCS and workers descend from the driver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


# --------------------------------------------------------------------------- 3. data loading vs model
def measure_data_loading(ctx: BenchContext) -> list[Row]:
    """Utterances/s of the train DataLoader alone (RawBoost off, then algo 4) vs a training step on preloaded batches."""
    rows = []
    for model in ctx.models:
        consumed = _model_throughput(ctx, model)
        for algo, label in ((0, "off"), (4, "algo 4 = 1+2+3")):
            import torch

            from cbl.train import resolve_workers

            # the workers a run on this device gets by default (auto: none on the CPU, CPUs - 1 on a GPU)
            config = resolve_workers(demo_config(ctx, model, **{"data.rawboost_algo": algo}),
                                     torch.device(ctx.device), None)
            loaded = _loader_throughput(ctx, config)
            suffix = ("b" if model == "base" else "") + ("" if algo == 0 else "+rb")
            rows.append(Row(f"3{suffix}", f"train loader vs training step, {model} model, RawBoost {label}",
                            "loader", loaded, "model", consumed, "utt/s", "ratio >= 3", loaded / consumed >= 3,
                            note=f"data.num_workers -1 (auto) = {config.data.num_workers} on {ctx.device}, "
                            f"{config.data.max_len}-sample crops"))
    return rows


def _loader_throughput(ctx: BenchContext, config) -> float:
    import torch

    from cbl.data import load_split, make_train_loader

    torch.set_num_threads(ctx.threads)
    records = load_split(config.data, "train")
    count, started, epoch = 0, time.perf_counter(), 0
    while True:  # as many epochs as it takes to time loader_batches batches
        loader = make_train_loader(records, config.data, batch_size=config.train.batch_size, seed=0, epoch=epoch)
        for batch in loader:
            count += batch["label"].numel()
            if count >= ctx.sizes.loader_batches * config.train.batch_size:
                return count / (time.perf_counter() - started)
        epoch += 1


def _model_throughput(ctx: BenchContext, model_name: str) -> float:
    """Forward + weighted CE + backward + AdamW step on batches already in memory (on the device)."""
    import torch

    from cbl.data import load_split, make_train_loader
    from cbl.losses import compute_loss
    from cbl.model import build_model, param_groups
    from cbl.train import autocast_for

    config = demo_config(ctx, model_name, **{"loss.type": "ce_only"})
    torch.set_num_threads(ctx.threads)
    device = torch.device(ctx.device)
    records = load_split(config.data, "train")
    loader = make_train_loader(records, config.data, batch_size=config.train.batch_size, seed=0)
    batches = [b for _, b in zip(range(min(len(loader), ctx.sizes.loader_batches)), loader)]
    model = build_model(config.model).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, config.optim))
    weights = torch.tensor([1.0, 1.0], device=device)

    def step(batch) -> None:
        audio, labels = batch["audio"].to(device), batch["label"].to(device)
        with autocast_for(config, device):
            out = model(audio, None)
        compute_loss(out, labels, None, config.loss, weights).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: allocator, kernels
    _sync(device)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    _sync(device)
    return sum(b["label"].numel() for b in batches) / (time.perf_counter() - started)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- 4r. the eval-mode refit pass
# ASVspoof 2019 LA: training and dev utterances, and the refit cap (centers.refit_max_utterances)
_LA_TRAIN, _LA_DEV = 25380, 24844


def measure_refit_cost(ctx: BenchContext) -> list[Row]:
    """The centers' eval-mode refit pass per epoch: its share of a demo epoch, and an estimate for XLS-R on LA.

    Demo: one cluster_only run on the default demo at the default cap (every
    bonafide training utterance of the demo), ``refit_seconds`` / ``epoch_seconds``
    per epoch after the first, median.
    XLS-R: the per-utterance times of a training step (forward + backward, feature
    encoder frozen, train mode) and of an eval-mode forward, measured side by side
    on a random-weight XLS-R 300M (4-s crops), give the share of an ASVspoof 2019 LA
    epoch (25,380 training steps + 24,844 dev forwards) that ``cap`` refit
    forwards take. Same-device ratios; on a GPU the absolute times differ, the
    train/inference ratio of the same network much less.
    """
    from cbl.config import CentersConfig
    from cbl.train import fit, read_history

    ctx.echo("  [4r] a cluster_only run on the default demo, refit every epoch")
    if ctx.sizes.name == "tiny":  # the tests: seconds
        config = demo_config(ctx, **{"loss.type": "cluster_only", "centers.refresh_every": 1})
    else:  # the demo as users run it (900 one-second utterances per split), 3 epochs
        from cbl.profiles import resolve_config

        config = resolve_config(None, ["loss.type=cluster_only", "centers.refresh_every=1", "train.epochs=3",
                                       f"train.num_threads={ctx.threads}", f"train.device={ctx.device}"], demo=True)
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as run_dir:
        fit(config, None, run_dir)
        history = read_history(run_dir)[1:] or read_history(run_dir)
    refit = statistics.median(float(h["refit_seconds"]) for h in history)
    epoch = statistics.median(float(h["epoch_seconds"]) for h in history)
    rows = [Row("4r", f"eval-mode refit pass vs the whole epoch (train + refit + dev), demo, cap "
                f"{config.centers.refit_max_utterances}", "refit", refit, "epoch", epoch, "s", "ratio <= 0.10",
                refit / epoch <= 0.10, note=f"median of {len(history)} epochs")]
    if ctx.sizes.name == "tiny":
        return rows
    cap = CentersConfig().refit_max_utterances
    train_step, forward = _xlsr_seconds_per_utterance(ctx)
    share = cap * forward / (_LA_TRAIN * train_step + _LA_DEV * forward + cap * forward)
    rows.append(Row("4r.xlsr", f"the same for XLS-R 300M on ASVspoof 2019 LA train (estimate: {cap} refit "
                    f"forwards vs {_LA_TRAIN:,} training steps + {_LA_DEV:,} dev forwards)", "refit",
                    cap * forward, "epoch", _LA_TRAIN * train_step + _LA_DEV * forward + cap * forward, "s",
                    "ratio <= 0.10", share <= 0.10,
                    note=f"per 4-s utterance on this {ctx.device.upper()}: training step {train_step:.2f} s, "
                    f"eval forward {forward:.2f} s ({train_step / forward:.1f}x); random weights, batch 1"))
    return rows


def _xlsr_seconds_per_utterance(ctx: BenchContext, repeats: int = 3) -> tuple[float, float]:
    """(training step, eval forward) seconds per 4-s utterance of a random XLS-R-300M-sized wav2vec2, medians."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    ctx.echo("  [4r] XLS-R 300M-sized model (random weights): training step vs eval forward")
    # facebook/wav2vec2-xls-r-300m's architecture (its config.json): 24 layers of 1024, layer-norm conv stack
    config = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                            conv_dim=(512,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
                            conv_bias=True, layerdrop=0.1, mask_time_prob=0.05)
    model = Wav2Vec2Model(config).to(ctx.device)
    model.freeze_feature_encoder()
    audio = torch.randn(1, 64600, device=ctx.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times: dict[str, list[float]] = {"train": [], "eval": []}
    for repeat in range(repeats + 1):  # the first round warms up
        model.train()
        started = time.perf_counter()
        model(audio).last_hidden_state.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_time = time.perf_counter() - started
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            model(audio)
        eval_time = time.perf_counter() - started
        if repeat:
            times["train"].append(train_time)
            times["eval"].append(eval_time)
    return statistics.median(times["train"]), statistics.median(times["eval"])


# --------------------------------------------------------------------------- 4. center refresh
def measure_center_refresh(ctx: BenchContext) -> list[Row]:
    """Seconds per k-means refresh (warm start, K=20, D=256) as bonafide embeddings grow; first fit beside it."""
    import torch

    from cbl.centers import KMeansCenters

    rows = []
    for n in ctx.sizes.refresh_sizes:
        points = _clustered_points(n, dim=256, clusters=20, seed=n)
        centers = KMeansCenters(20, 256, seed=0)
        started = time.perf_counter()
        centers.fit(points[: min(n, 2000)])  # what fit() does before epoch 1: a capped sample
        first = time.perf_counter() - started
        drifted = torch.nn.functional.normalize(points + 0.05 * torch.randn_like(points), dim=-1)
        started = time.perf_counter()
        centers.refresh(drifted)  # what every epoch does: warm start from the previous centers
        refresh = time.perf_counter() - started
        at_25k = n == 25000
        rows.append(Row(f"4.{n // 1000}k" if n >= 1000 else f"4.{n}", f"center refresh, {n:,} x 256, K=20 "
                        "(vs the initial k-means++ fit on <= 2k)", "refresh", refresh, "first fit", first, "s",
                        "refresh <= 1 s" if at_25k else "report", (refresh <= 1.0) if at_25k else None))
    return rows


def _clustered_points(n: int, *, dim: int, clusters: int, seed: int):
    """(n, dim) unit vectors around ``clusters`` random directions: embeddings after some training look so."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    members = torch.randint(0, clusters, (n,), generator=generator)
    points = directions[members] + 0.3 * torch.randn(n, dim, generator=generator) / math.sqrt(dim) * 4
    return torch.nn.functional.normalize(points, dim=-1)


# --------------------------------------------------------------------------- 5. search efficiency
def measure_search_efficiency(ctx: BenchContext) -> list[Row]:
    """ASHA + Optuna TPE vs the full grid: epochs to reach a config within 0.5 points of the grid's best.

    The grid is trained once for real (every epoch's dev EER of every config: a
    tabular benchmark); the search is then replayed against those curves over many
    sampler seeds, once as Ray does it today (an ASHA-stopped trial is told to
    Optuna as COMPLETE with its truncated score) and once telling the truth
    (intermediate values reported, state PRUNED). Replaying is cheap and exact for
    ASHA's rule; it assumes a config retrained with the same seed gives the same
    curve, which holds for cbl (deterministic data order and init).
    """
    curves = _grid_curves(ctx)
    grid_epochs = sum(len(c) for c in curves.values())
    best = min(min(c) for c in curves.values())
    keys = [k for k, _ in ctx.sizes.grid]
    ctx.cache.setdefault("data", {})["grid_curves"] = [{"config": dict(zip(keys, point)), "dev_eer": curve}
                                                       for point, curve in curves.items()]
    variants = {"ray": ("complete", True), "pruned": ("pruned", True), "cbl": ("pruned", False)}
    costs = {name: [replay_search(curves, ctx.sizes.grid, seed=seed, tell=tell, max_t=ctx.sizes.grid_epochs,
                                  rerun_finished=rerun)
                    for seed in range(ctx.sizes.replay_seeds)]
             for name, (tell, rerun) in variants.items()}
    ctx.cache["data"]["replay"] = costs
    rows = []
    for row_id, name, label in (("5a", "ray", "Ray's way: stopped trials told COMPLETE, repeats rerun"),
                                ("5b", "cbl", "cbl's way: stopped told PRUNED, finished configs not rerun")):
        runs = costs[name]
        median = statistics.median(_cost(c) for c in runs)
        rows.append(Row(row_id, f"epochs to within {WITHIN_POINTS} pts of the grid's best dev EER: ASHA+TPE "
                        f"({label}) vs full grid", "ASHA+TPE", median, "grid", grid_epochs, "epochs",
                        "ratio <= 0.35", median / grid_epochs <= 0.35,
                        note=f"median over {len(runs)} seeds (a search that never gets there counts as endless), "
                        f"reached in {sum(c['reached'] for c in runs)}; {len(curves)} configs x "
                        f"{ctx.sizes.grid_epochs} epochs, grid best {100 * best:.2f}%; {SEARCH_CONCURRENCY} trials "
                        f"at a time, ASHA grace {ASHA_GRACE}, factor {ASHA_FACTOR:g}"))
    for row_id, a_name, b_name, what, a_label, b_label in (
            ("5c", "pruned", "ray", "stopped trials told PRUNED vs COMPLETE", "PRUNED", "COMPLETE"),
            ("5d", "cbl", "pruned", "finished configs answered from their result vs trained again", "reused",
             "rerun")):
        a_runs, b_runs = costs[a_name], costs[b_name]
        a, b = (statistics.mean(c["epochs"] for c in runs) for runs in (a_runs, b_runs))
        wins = sum(_cost(x) < _cost(y) for x, y in zip(a_runs, b_runs))
        losses = sum(_cost(x) > _cost(y) for x, y in zip(a_runs, b_runs))
        rows.append(Row(row_id, f"mean epochs spent: {what} (TPE, paired seeds)", a_label, a, b_label, b, "epochs",
                        "ratio < 1: better", a < b,
                        note=f"paired over {len(a_runs)} seeds: {a_label} sooner in {wins}, later in {losses}; "
                        f"reached {sum(c['reached'] for c in a_runs)} vs {sum(c['reached'] for c in b_runs)}"))
    return rows


def _cost(run: dict[str, Any]) -> float:
    """Epochs a replayed search spent to reach the target; endless when it never did."""
    return run["epochs"] if run["reached"] else math.inf


def _grid_curves(ctx: BenchContext) -> dict[tuple, list[float]]:
    """Train every grid config for ``grid_epochs``; return config values -> dev EER per epoch."""
    if "grid_curves" in ctx.cache:
        return ctx.cache["grid_curves"]
    import itertools
    from concurrent.futures import ProcessPoolExecutor

    from cbl.data import load_split

    keys = [k for k, _ in ctx.sizes.grid]
    points = list(itertools.product(*(values for _, values in ctx.sizes.grid)))
    configs = [demo_config(ctx, **{"train.epochs": ctx.sizes.grid_epochs, **dict(zip(keys, point))})
               for point in points]
    for split in ("train", "dev"):
        load_split(configs[0].data, split)  # generate the corpus once, before the workers start
    workers = _grid_workers(ctx)
    ctx.echo(f"  [5] training the grid: {len(points)} configs x {ctx.sizes.grid_epochs} epochs, {workers} at a time")
    jobs = [(config, str(ctx.work_dir)) for config in configs]
    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_train_curve, jobs))
    else:
        results = [_train_curve(job) for job in jobs]
    ctx.cache["grid_curves"] = dict(zip(points, results))
    return ctx.cache["grid_curves"]


def _grid_workers(ctx: BenchContext) -> int:
    if ctx.sizes.name == "tiny" or ctx.device == "cuda":
        return 1
    return max(1, min(2, len(os.sched_getaffinity(0))))


def _train_curve(job: tuple[Any, str]) -> list[float]:
    """One grid config trained to the end (a worker process): its dev EER per epoch."""
    from cbl.train import fit, read_history

    config, work_dir = job
    with tempfile.TemporaryDirectory(dir=work_dir) as run_dir:
        fit(config, None, run_dir)
        return [float(h["dev_eer"]) for h in read_history(run_dir)]


class _Rung:
    """One rung of Ray's AsyncHyperBandScheduler bracket: stop when below the top 1/rf of the scores seen here."""

    def __init__(self, milestone: float) -> None:
        self.milestone = milestone
        self.recorded: dict[int, float] = {}

    def cutoff(self, factor: float) -> float | None:
        import numpy as np

        return float(np.nanpercentile(list(self.recorded.values()), (1 - 1 / factor) * 100)) if self.recorded else None


def _asha_rungs(max_t: int) -> list[_Rung]:
    """Milestones as Ray computes them (``grace * rf**k``), highest first."""
    count = int(math.log(max_t / ASHA_GRACE) / math.log(ASHA_FACTOR) + 1)
    return [_Rung(ASHA_GRACE * ASHA_FACTOR**k) for k in reversed(range(count))]


def _asha_continues(rungs: list[_Rung], trial: int, epoch: int, eer: float, max_t: int) -> bool:
    """Ray's ``_Bracket.on_result`` for mode=min (reward = -EER); False = stop the trial."""
    if epoch >= max_t:
        return False
    for rung in rungs:
        if epoch < rung.milestone or trial in rung.recorded:
            continue
        cutoff = rung.cutoff(ASHA_FACTOR)
        rung.recorded[trial] = -eer
        return cutoff is None or -eer >= cutoff
    return True


def replay_search(curves: dict[tuple, list[float]], grid: Sequence[tuple[str, Sequence[Any]]], *, seed: int,
                  tell: str, max_t: int, concurrency: int = SEARCH_CONCURRENCY, max_trials: int = 0,
                  startup: int = 10, rerun_finished: bool = True) -> dict[str, Any]:
    """Replay ASHA + Optuna TPE against recorded curves; the epochs spent until a result within 0.5 points of the best.

    ``tell``: ``complete`` (an ASHA-stopped trial is told COMPLETE with its last
    score, as Ray's OptunaSearch does) or ``pruned`` (told PRUNED after reporting
    each epoch). ``concurrency`` trials run at once, one epoch per time step; the
    epochs of the whole step in which the target is seen count as spent. Stops
    after ``max_trials`` (default: twice the grid) without reaching it: the
    epochs spent so far are returned with ``reached`` False. ``startup``: TPE's
    random start-up trials (Optuna's default, and cbl's, is 10). ``rerun_finished``
    False: a suggestion equal to a configuration that already ran to ``max_t`` is
    answered from that result and drawn again (cbl's PrunedAwareOptunaSearch).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = min(min(c) for c in curves.values()) + WITHIN_POINTS / 100 + 1e-12
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    from cbl.search import PrunedAwareOptunaSearch

    max_redraws = PrunedAwareOptunaSearch.MAX_REDRAWS
    rungs, running, launched, spent = _asha_rungs(max_t), [], 0, 0
    finished: dict[tuple, float] = {}  # configurations that ran to max_t -> final dev EER
    point_of: dict[int, tuple] = {}
    max_trials = max_trials or 2 * len(curves)
    while True:
        redraws = 0
        while len(running) < concurrency and launched < max_trials:
            trial = study.ask()
            point = tuple(trial.suggest_categorical(key, list(values)) for key, values in grid)
            if not rerun_finished and point in finished and redraws < max_redraws:
                study.tell(trial, finished[point])
                redraws += 1
                continue
            point_of[launched] = point
            running.append({"trial": trial, "curve": curves[point], "epoch": 0, "number": launched})
            launched += 1
        if not running:
            return {"epochs": spent, "reached": False, "trials": launched}
        spent += len(running)
        reached = False
        for item in list(running):
            item["epoch"] += 1
            eer = item["curve"][item["epoch"] - 1]
            reached = reached or eer <= target
            if _asha_continues(rungs, item["number"], item["epoch"], eer, max_t):
                item["trial"].report(eer, item["epoch"])
                continue
            running.remove(item)
            if tell == "pruned" and item["epoch"] < max_t:
                item["trial"].report(eer, item["epoch"])
                study.tell(item["trial"], state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(item["trial"], eer)
                if item["epoch"] >= max_t:
                    finished[point_of[item["number"]]] = eer
        if reached:
            return {"epochs": spent, "reached": True, "trials": launched}


# --------------------------------------------------------------------------- 6. evaluation throughput
def measure_eval_throughput(ctx: BenchContext) -> list[Row]:
    """Full-length scoring: length-bucketed batches (cbl's eval loader) vs padding to the longest in protocol order."""
    rows = []
    records = _eval_records(ctx)
    for model in ctx.models:
        config = demo_config(ctx, model)
        results: dict[str, list[tuple[float, float]]] = {"bucketed": [], "naive": []}
        for _ in range(max(1, ctx.sizes.pairs - 1)):
            for side in ("bucketed", "naive"):
                ctx.echo(f"  [6] {model} model, {side} batches")
                results[side].append(_score_throughput(ctx, config, records, bucketed=side == "bucketed"))
        speed = {side: statistics.median(r[0] for r in runs) for side, runs in results.items()}
        memory = {side: max(r[1] for r in runs) for side, runs in results.items()}
        suffix = "b" if model == "base" else ""
        what = f"{len(records)} utterances of {_eval_low(ctx):g}-{ctx.sizes.eval_max_seconds:g} s (log-uniform), " \
               f"batch {config.train.eval_batch_size}, {model} model"
        rows.append(Row(f"6{suffix}", f"eval throughput: length-bucketed vs padded in protocol order ({what})",
                        "bucketed", speed["bucketed"], "naive", speed["naive"], "utt/s", "ratio >= 2",
                        speed["bucketed"] / speed["naive"] >= 2))
        rows.append(Row(f"6{suffix}.mem", f"eval peak memory: bucketed vs naive ({model} model)", "bucketed",
                        memory["bucketed"], "naive", memory["naive"], "MiB",
                        note="peak GPU memory allocated" if ctx.device == "cuda" else "peak RSS growth of the process"))
    return rows


def _eval_records(ctx: BenchContext):
    """A protocol with realistic lengths: log-uniform in [1 s, eval_max_seconds] (short utterances dominate)."""
    import numpy as np
    import soundfile as sf

    from cbl.data import Record

    folder = ctx.work_dir / "eval_audio"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    seconds = np.exp(rng.uniform(math.log(_eval_low(ctx)), math.log(ctx.sizes.eval_max_seconds), ctx.sizes.eval_utterances))
    records = []
    for index, length in enumerate(seconds):
        path = folder / f"utt{index:05d}.flac"
        if not path.is_file():
            # noise: the model's cost depends on the length, not on what it hears
            sf.write(path, (0.1 * rng.standard_normal(int(length * 16000))).astype(np.float32), 16000)
        records.append(Record(utt_id=f"utt{index:05d}", path=str(path), label=index % 2, attack="-",
                              speaker="bench"))
    return records


def _eval_low(ctx: BenchContext) -> float:
    return 1.0 if ctx.sizes.eval_max_seconds > 1 else 0.25


def _score_throughput(ctx: BenchContext, config, records, *, bucketed: bool) -> tuple[float, float]:
    """(utterances/s, peak memory MiB) of scoring ``records`` with the tiny or base model."""
    import torch
    from torch.utils.data import DataLoader

    from cbl.data import EvalDataset, collate, make_eval_loader
    from cbl.model import build_model
    from cbl.train import autocast_for

    torch.set_num_threads(ctx.threads)
    device = torch.device(ctx.device)
    model = build_model(config.model).to(device).eval()
    with torch.no_grad():  # warm-up outside the clock
        model(torch.zeros(2, 16000, device=device), None)
    batch_size = config.train.eval_batch_size
    baseline = _reset_peak_memory(device)
    started = time.perf_counter()
    if bucketed:
        loader = make_eval_loader(records, config.data, batch_size=batch_size)
    else:
        loader = DataLoader(EvalDataset(records, config.data), batch_size=batch_size, shuffle=False,
                            collate_fn=collate)
    count = 0
    with torch.no_grad():
        for batch in loader:
            mask = batch["attention_mask"]
            with autocast_for(config, device):
                model(batch["audio"].to(device), None if mask is None else mask.to(device))
            count += batch["label"].numel()
    _sync(device)
    seconds = time.perf_counter() - started
    return count / seconds, max(0.0, _peak_memory_mib(device) - baseline)


def _reset_peak_memory(device) -> float:
    """Reset the peak-memory counter; return the current level (MiB) to subtract from the peak."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass
    return _proc_kib(os.getpid(), "VmRSS") / 1024


def _peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _proc_kib(os.getpid(), "VmHWM") / 1024


# --------------------------------------------------------------------------- 8. frozen-feature cache (lead)
_HEAD_GRID = (("model.pooling", ("mean", "max")), ("loss.type", ("cluster_only", "ce_only")))


def measure_feature_cache(ctx: BenchContext) -> list[Row]:
    """A head-only sweep (frozen front-end; pooling x loss type) with ``train.feature_cache`` on vs off.

    The same configs and seeds, one after another in this process, timed end to end
    (model build, the cache's one pass over train + dev, every epoch); both sides
    start from an empty cache folder. Then the dev EER of every config and epoch is
    compared between the two sides: the cache must not change what is learnt.
    """
    import itertools

    from cbl.feature_cache import describe_cache
    from cbl.train import fit, read_history

    points = [dict(zip([k for k, _ in _HEAD_GRID], values)) for values in itertools.product(*[v for _, v in _HEAD_GRID])]
    epochs = ctx.sizes.epochs + 2  # head-only sweeps train longer (search_spaces/head_only.yaml: 20 epochs)
    seconds: dict[str, float] = {}
    eers: dict[str, list[list[float]]] = {"cache": [], "audio": []}
    cache_bytes = 0
    for side in ("audio", "cache"):
        root = Path(tempfile.mkdtemp(prefix=f"fc-{side}-", dir=ctx.work_dir))
        started = time.perf_counter()
        for i, point in enumerate(points):
            ctx.echo(f"  [8] {side} config {i + 1}/{len(points)} {point}")
            config = demo_config(ctx, **{"model.freeze_ssl": True, "data.train_crop": "fixed",
                                         "train.epochs": epochs, "centers.refresh_every": 1,
                                         "train.feature_cache": side == "cache",
                                         "train.feature_cache_dir": str(root / "feature_cache"), **point})
            fit(config, None, root / f"run{i}")
            eers[side].append([float(h["dev_eer"]) for h in read_history(root / f"run{i}")])
        seconds[side] = time.perf_counter() - started
        if side == "cache":
            cache_bytes = sum(e["bytes"] for e in describe_cache(root / "feature_cache"))
    worst = max(abs(a - b) for ca, cb in zip(eers["cache"], eers["audio"]) for a, b in zip(ca, cb))
    sweep = f"{len(points)} configs x {epochs} epochs, frozen tiny front-end, {ctx.sizes.utterances} utt/split"
    return [
        Row("8", "frozen-feature cache: head-only sweep time, cache vs audio", "cache", seconds["cache"],
            "audio", seconds["audio"], "s", "ratio <= 0.2", seconds["cache"] / seconds["audio"] <= 0.2,
            note=f"{sweep}; end to end incl. model builds and the cache's one pass (direct fits, no Ray)"),
        Row("8.eer", "frozen-feature cache: largest |dev EER difference| over configs and epochs", "|diff|", worst,
            "dev EER", statistics.mean(e for run in eers["audio"] for e in run), "", "difference = 0",
            worst <= 1e-9, note="the same config and seed with and without the cache"),
        Row("8.size", "frozen-feature cache: size on disk (train + dev)", "cache", cache_bytes / 2**20, "", None,
            "MiB", note="float32 front-end states, one layer"),
    ]


def measure_feature_cache_sweep(ctx: BenchContext) -> list[Row]:
    """``search_spaces/head_only.yaml --demo`` through Ray (``cbl-search run``), cache on vs off, end to end.

    The shipped head-only sweep (8 Optuna trials, ASHA, 2 at a time, frozen tiny
    front-end), each side a cold ``cbl-search run`` subprocess from an empty
    experiment folder: Ray's start-up and every trial's included. The training
    time summed over trials (``epoch_seconds``) is reported beside it.
    """
    from cbl.train import read_history

    space = Path(__file__).resolve().parents[1] / "search_spaces" / "head_only.yaml"
    if not space.is_file():
        raise CblError(f"bench: {space} is missing (the head-only sweep ships with the repository)")
    sets = [f"data.demo_utterances={ctx.sizes.utterances}", f"data.demo_seconds={ctx.sizes.seconds}",
            f"train.num_threads={ctx.threads}", f"train.device={ctx.device}"]
    wall, train = {}, {}
    for side in ("cache", "audio"):
        folder = Path(tempfile.mkdtemp(prefix=f"heads-{side}-", dir=ctx.work_dir))
        command = [sys.executable, "-m", "cbl.cli", "run", str(space), "--demo", "--storage", str(folder),
                   "--no-final-eval", "--set", f"train.feature_cache={'true' if side == 'cache' else 'false'}"]
        command += [arg for item in sets for arg in ("--set", item)]
        ctx.echo(f"  [8] head_only.yaml --demo through Ray, {side}")
        run = _run_measured(command, folder / "run.log", spawns_children=True)
        if run["returncode"] != 0:
            raise CblError(f"bench: the head-only sweep ({side}) failed (exit {run['returncode']}); "
                           f"see {folder / 'run.log'}")
        wall[side] = run["seconds"]
        train[side] = sum(float(h["epoch_seconds"]) for metrics in folder.glob("head_only/trials/*/metrics.jsonl")
                          for h in read_history(metrics.parent))
    return [
        Row("8.ray", "head_only.yaml --demo through Ray (cbl-search run, 8 trials): cache vs audio, wall time",
            "cache", wall["cache"], "audio", wall["audio"], "s", "ratio <= 0.2", wall["cache"] / wall["audio"] <= 0.2,
            note="cold runs incl. Ray start-up and trial start-up; the two sweeps may sample different trials "
                 "(trials run two at a time)"),
        Row("8.train", "the same sweeps: training time summed over trials (epoch_seconds)", "cache", train["cache"],
            "audio", train["audio"], "s", "report"),
    ]


# --------------------------------------------------------------------------- the run
MEASUREMENTS: dict[str, Callable[[BenchContext], list[Row]]] = {
    "cluster_loss": measure_cluster_loss,  # 1
    "ray_trial": measure_ray_trial,  # 2
    "data_loading": measure_data_loading,  # 3
    "center_refresh": measure_center_refresh,  # 4
    "refit_cost": measure_refit_cost,  # 4r
    "search_efficiency": measure_search_efficiency,  # 5
    "eval_throughput": measure_eval_throughput,  # 6
    "memory": measure_memory,  # 7
    "feature_cache": measure_feature_cache,  # 8
    "feature_cache_sweep": measure_feature_cache_sweep,  # 8, through Ray
}


def parse_only(text: str | None) -> list[str]:
    """``--only a,b`` -> measurement names in table order; UsageError naming an unknown one."""
    if not text:
        return list(MEASUREMENTS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown or not names:
        raise UsageError(f"--only {text!r}: unknown measurement {', '.join(unknown) or '(none given)'}; "
                         f"expected some of: {', '.join(MEASUREMENTS)}")
    return [n for n in MEASUREMENTS if n in names]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, library versions and GPU: the numbers mean nothing without them."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ("ray", "optuna", "transformers", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 2**20, 1), "load_average": list(os.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **versions,
    }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit in ("MiB", "epochs"):
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def format_table(rows: Sequence[Row]) -> str:
    """The one table: what, side A, side B, A/B, target, met."""
    header = ("#", "measurement", "A", "B", "A/B", "target", "met")
    lines = [(r.id, r.what, f"{r.a_label} {_number(r.a, r.unit)}",
              f"{r.b_label} {_number(r.b, r.unit)}", "-" if r.ratio is None else f"{r.ratio:.3g}", r.target,
              {True: "yes", False: "NO", None: "-"}[r.met]) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *lines]]
    out.insert(1, "  ".join("-" * w for w in widths))
    out += [f"  {r.id}: {r.note}" for r in rows if r.note]
    return "\n".join(out)


def run_bench(sizes: Sizes, names: Sequence[str], out: Path, *, echo: Callable[[str], None] = print,
              work_dir: Path | None = None) -> dict[str, Any]:
    """Run the named measurements, print the table and the machine, write the JSON (atomically) to ``out``."""
    import torch

    from cbl.yamlio import atomic_write_text

    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = machine_info()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cbl-bench-", dir=work_dir) as scratch:
        ctx = BenchContext(sizes=sizes, work_dir=Path(scratch), device=device, echo=echo)
        for name in names:
            echo(f"measuring {name} ...")
            t0 = time.monotonic()
            rows += MEASUREMENTS[name](ctx)
            echo(f"  {name}: {time.monotonic() - t0:.0f} s")
    seconds = time.monotonic() - started
    echo(f"\ncbl-search bench ({sizes.name}): {seconds:.0f} s on {machine['cpu']}, {machine['cores_usable']} cores, "
         f"torch {machine['torch']}, GPU {machine['gpu'] or 'none'}; torch threads per run: {ctx.threads}")
    echo(format_table(rows))
    result = {"sizes": asdict(sizes), "machine": machine, "seconds": seconds, "device": device,
              "measurements": list(names), "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
              "data": ctx.cache.get("data", {})}
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    echo(f"numbers written to {out}")
    return result


def sizes_for(quick: bool, name: str | None = None) -> Sizes:
    """``--quick`` -> quick, else full; a hidden ``--size`` names any preset (tests use ``tiny``)."""
    return SIZES[name] if name else SIZES["quick" if quick else "full"]


if __name__ == "__main__":  # pragma: no cover
    from cbl.cli import main

    main(["bench", *sys.argv[1:]])
