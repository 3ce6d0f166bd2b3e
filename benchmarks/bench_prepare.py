"""Time and size of `hybrid prepare` on the 421 real CAMELS-US catchments (Caravan layout).

    python benchmarks/bench_prepare.py [--repeats 3]

Baseline in the same process: reading the same 421 CSV files with a bare ``pandas.read_csv``
(the unavoidable part of the work); the ratio shows what validation + Parquet writing add.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from _common import caravan_gauges, machine, require_caravan, timed

from hybrid.config import config_from_dict
from hybrid.prepare import prepare
from hybrid.storage import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    caravan = require_caravan()
    gauges = caravan_gauges(caravan)
    files = [caravan / "timeseries" / "csv" / "camels" / f"{g}.csv" for g in gauges]
    base_median, base_all, _ = timed(lambda: [pd.read_csv(f) for f in files], args.repeats)

    tmp = Path(tempfile.mkdtemp())
    cfg = config_from_dict({
        "run_id": "bench", "store": str(tmp), "dataset": "caravan", "data_dir": str(caravan),
        "static_attributes": ["p_mean", "pet_mean", "aridity", "frac_snow", "area"],
        "train_start_date": "1981-10-01", "train_end_date": "1999-09-30",
        "validation_start_date": "1999-10-01", "validation_end_date": "2004-09-30",
        "test_start_date": "2004-10-01", "test_end_date": "2014-09-30", "seq_length": 365})
    counter = iter(range(1000))

    def run():
        store = open_store(str(tmp)).child(f"r{next(counter)}")
        return store, prepare(cfg, store)

    med, all_times, (store, manifest) = timed(run, args.repeats)
    size = sum(p.stat().st_size for p in Path(store.root).rglob("*") if p.is_file())
    print(machine())
    print(f"catchments prepared: {len(manifest['catchments'])}, "
          f"skipped: {len(manifest['skipped'])}")
    print(f"hybrid prepare (file://, 421 catchments): median {med:.2f} s of "
          f"{[round(t, 2) for t in all_times]}")
    print(f"baseline pandas.read_csv of the same files: median {base_median:.2f} s of "
          f"{[round(t, 2) for t in base_all]}")
    print(f"ratio prepare / bare read: {med / base_median:.2f}x")
    print(f"store size: {size / 2**20:.1f} MiB (CSV input: "
          f"{sum(f.stat().st_size for f in files) / 2**20:.1f} MiB)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
