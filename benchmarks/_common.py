"""Shared helpers for the benchmark scripts: where the real data is, and how results print."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def require_caravan() -> Path:
    path = SHARED_DATA / "caravan"
    if not path.is_dir():
        sys.exit(f"skipped: real data not found at {path} (set HYBRID_SHARED_DATA)")
    return path


def load() -> str:
    """The load average, because a time measured beside other work is not the machine's own
    speed: every printed figure has to say how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.node()}: {os.cpu_count()} CPUs, {cpu}, "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {load()}")


def timed(fn, repeats: int = 3) -> tuple[float, list[float], object]:
    """Median wall time of ``repeats`` calls (and all of them, and the last result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def runs(times: list[float], digits: int = 2) -> str:
    """``median X s of [a, b, c]``: the spread is printed so one disturbed run shows."""
    return (f"median {statistics.median(times):.{digits}f} s of "
            f"{[round(t, digits) for t in times]}")


def draw(items: list[str], n: int | None, seed: int = 0) -> list[str]:
    """``n`` of ``items`` by seed, in their sorted order (all of them when ``n`` is None)."""
    items = sorted(items)
    if n is None or n >= len(items):
        return items
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


def caravan_gauges(caravan: Path, n: int | None = None, seed: int = 0) -> list[str]:
    return draw([p.stem for p in (caravan / "timeseries" / "csv" / "camels").glob("*.csv")],
                n, seed)


def scratch_store(source, keys: list[str]):
    """A throw-away store holding copies of ``keys`` of ``source``: a benchmark that writes
    (encode, decode) must never touch the outputs of the run it measures."""
    from hybrid.store.storage import open_store

    scratch = open_store(tempfile.mkdtemp(prefix="hybrid-bench-"))
    for key in keys:
        scratch.write_bytes(key, source.read_bytes(key))
    return scratch


def bench_config(caravan: Path, gauges: list[str], hidden: int, train_minutes: float,
                 store: str, run_id: str | None = None):
    """The regional model the encoder and decoder benchmarks share (one run, trained once)."""
    from hybrid.config import config_from_dict

    return config_from_dict({
        "run_id": run_id or f"enc-{len(gauges)}-h{hidden}", "store": store,
        "dataset": "caravan", "data_dir": str(caravan), "basins": gauges,
        "static_attributes": ["p_mean", "pet_mean", "aridity", "frac_snow", "moisture_index",
                              "seasonality", "high_prec_freq", "low_prec_freq", "area"],
        "train_start_date": "1981-10-01", "train_end_date": "1999-09-30",
        "validation_start_date": "1999-10-01", "validation_end_date": "2004-09-30",
        "test_start_date": "2004-10-01", "test_end_date": "2014-09-30",
        "seq_length": 365, "hidden_size": hidden, "batch_size": 128, "epochs": 50,
        "learning_rate": 0.002, "max_train_samples_per_epoch": 25000,
        "max_validation_samples": 5000, "max_train_minutes": train_minutes,
        "train_basin_fraction": 0.5, "seed": 42,
        "decoder": {"name": "rf", "params": {"n_estimators": 100}},
    })


def model_arguments(parser) -> None:
    """Arguments naming the shared benchmark model (bench_encoder and bench_decoders)."""
    parser.add_argument("--catchments", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--train-minutes", type=float, default=10)
    parser.add_argument("--store", default="/tmp/hybrid-bench")
    parser.add_argument("--run", help="use the trained model of this existing run instead")


def open_finished_run(path: str):
    """(store, config) of a run folder made by ``hybrid run``, opened read-only."""
    from hybrid.store.runs import load_run_config
    from hybrid.store.storage import open_store

    store = open_store(path)
    return store, load_run_config(store)


def trained_run(args, folder: str | None = None):
    """(config, store, trained model, catchments) of the shared benchmark model, trained once.

    With ``--run`` the model of an existing run is used instead (e.g. the 421-catchment one) and
    ``--catchments`` of the catchments its ``folder`` stage finished (default: prepared) are
    drawn by seed; nothing is written to that run.
    """
    from hybrid.encoder.checkpoints import load_trained
    from hybrid.encoder.trainer import train_regional
    from hybrid.stages.prepare import prepare
    from hybrid.store import layout, partitions
    from hybrid.store.runs import open_run

    folder = folder or layout.CATCHMENTS
    if getattr(args, "run", None):
        store, cfg = open_finished_run(args.run)
        manifest = partitions.read_manifest(store, folder)
        if manifest is None:
            sys.exit(f"{store.uri(layout.manifest_key(folder))} not found: is {args.run} a "
                     "finished run?")
        return cfg, store, load_trained(store), draw(list(manifest["catchments"]),
                                                     args.catchments)
    caravan = require_caravan()
    gauges = caravan_gauges(caravan, args.catchments, seed=0)
    cfg = bench_config(caravan, gauges, args.hidden, args.train_minutes, args.store)
    store = open_run(cfg)
    prepared = prepare(cfg, store)
    return cfg, store, train_regional(store, cfg, "cpu"), sorted(prepared.done)
