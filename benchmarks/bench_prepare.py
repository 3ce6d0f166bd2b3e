"""Time and size of `hybrid prepare` on the 421 real CAMELS-US catchments (Caravan layout).

    python benchmarks/bench_prepare.py [--repeats 3] [--catchments N]

Baseline in the same process: reading the same CSV files with a bare ``pandas.read_csv``
(the unavoidable part of the work); the ratio shows what validation + Parquet writing add.
Each repeat prepares into a fresh run folder, so none of them resumes from another.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from _common import caravan_gauges, load, machine, require_caravan, runs, timed

from hybrid.config import config_from_dict
from hybrid.stages.prepare import prepare
from hybrid.store.storage import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--catchments", type=int, help="a seeded subset (default: all 421)")
    args = parser.parse_args()
    caravan = require_caravan()
    gauges = caravan_gauges(caravan, args.catchments)
    files = [caravan / "timeseries" / "csv" / "camels" / f"{g}.csv" for g in gauges]
    print(machine())
    base_median, base_all, _ = timed(lambda: [pd.read_csv(f) for f in files], args.repeats)

    tmp = Path(tempfile.mkdtemp())
    cfg = config_from_dict({
        "run_id": "bench", "store": str(tmp), "dataset": "caravan", "data_dir": str(caravan),
        "basins": gauges,
        "static_attributes": ["p_mean", "pet_mean", "aridity", "frac_snow", "area"],
        "train_start_date": "1981-10-01", "train_end_date": "1999-09-30",
        "validation_start_date": "1999-10-01", "validation_end_date": "2004-09-30",
        "test_start_date": "2004-10-01", "test_end_date": "2014-09-30", "seq_length": 365})
    counter = iter(range(1000))

    def run():
        store = open_store(str(tmp)).child(f"r{next(counter)}")
        return store, prepare(cfg, store)

    med, all_times, (store, result) = timed(run, args.repeats)
    size = sum(p.stat().st_size for p in Path(store.root).rglob("*") if p.is_file())
    print(f"catchments prepared: {len(result.done)}, skipped: {len(result.skipped)}, "
          f"failed: {len(result.failed)}")
    print(f"hybrid prepare (file://, {len(gauges)} catchments): {runs(all_times)}")
    print(f"baseline pandas.read_csv of the same files: {runs(base_all)}")
    print(f"ratio prepare / bare read: {med / base_median:.2f}x "
          f"({med / len(gauges) * 1000:.1f} ms per catchment)")
    print(f"store size: {size / 2**20:.1f} MiB (CSV input: "
          f"{sum(f.stat().st_size for f in files) / 2**20:.1f} MiB)")
    print(f"after the measurement: {load()}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
