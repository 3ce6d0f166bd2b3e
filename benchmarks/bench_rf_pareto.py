"""The random-forest decoder's settings as a measured Pareto front: test NSE against fit time.

    python benchmarks/bench_rf_pareto.py --run RUN_FOLDER --catchments 40 [--repeats 1]
    python benchmarks/bench_rf_pareto.py --list

A decoder is fitted once per catchment, so its fit time is the cost of the decode stage, and
its pickled size the cost of keeping it (``decoder.keep_models``). Whether a cheaper forest
loses skill is an empirical question about these features, so this measures it instead of
assuming it: for each setting in ``GRID`` (the project's default, scikit-learn's and the
paper's TF-DF defaults among them) it fits one forest per catchment on the run's encoded
training days (``split == "train"``, observed target), predicts the test days and records
the test NSE, the fit and predict time with ``n_jobs=1`` (a decoder task holds one core), and
the ``joblib`` size with ``compress=3``.

Catchments are a seeded draw stratified by HUC2 region (``reference_paper_camelsus_421.csv``),
so every region is in the sample and no single climate decides the front. Two worker processes
fit different catchments at once, one core each: the times are what a decoder task costs while
the machine's other cores are busy, as they are in a run.

Prints one row per setting sorted by fit time, marks the settings no other one beats on both
time and NSE (the Pareto front) and the "knee" (the cheapest setting whose NSE changes by less
than ``KNEE_TOLERANCE`` against the baseline: catchment by catchment in median and in mean, and
in the median over catchments); writes ``rf_pareto.csv``, ``rf_pareto_catchments.csv`` and
``rf_pareto.png`` (``--out``, default ``benchmarks/results``). ``--combine`` summarises several
passes together.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from _common import RESULTS, SHARED_DATA, load, machine, open_finished_run

from hybrid.store import layout, partitions

REFERENCE = SHARED_DATA / "reference_paper_camelsus_421.csv"
#: a setting whose NSE changes by less than this against the baseline (paired median and mean,
#: and median over catchments) counts as "as good" for the knee
KNEE_TOLERANCE = 0.005


def setting(trees: int, max_samples: float | None = None, max_depth: int | None = None,
            leaf: int = 5, features: float = 0.33) -> dict:
    """Every parameter spelled out, so the project's own defaults never fill one in."""
    return {"n_estimators": trees, "max_samples": max_samples, "max_depth": max_depth,
            "min_samples_leaf": leaf, "max_features": features}


#: settings with a name of their own: the baseline, and the two defaults people start from
NAMED = {
    "project default": setting(100),
    "scikit-learn default": setting(100, leaf=1, features=1.0),
    # TF-DF's random forest: 300 trees, max_depth 16, min_examples 5, a third of the features
    # per split for regression; the paper's decoder
    "TF-DF default (paper)": setting(300, max_depth=16),
}
#: one axis at a time from the project's default, plus a few combinations of the cheap
#: directions; a full product (4 x 3 x 3 x 3 x 2 = 216 fits per catchment) would take a day.
#: Expected cost, estimated (not measured) from the default's ~5 s fit with n_jobs=1 on ~6,500
#: days x 64 features (BENCHMARKS.md): ~15 default fits per catchment, ~25 minutes for 40
#: catchments on two otherwise idle cores
GRID = list(NAMED.values()) + [
    setting(25), setting(50),
    setting(25, 0.5), setting(50, 0.5), setting(100, 0.5),
    setting(50, 0.25), setting(100, 0.25),
    setting(50, max_depth=12), setting(100, max_depth=12), setting(100, max_depth=16),
    setting(100, leaf=10), setting(100, leaf=20),
    setting(50, 0.5, leaf=10), setting(50, 0.5, 12, 10),
    setting(50, features=1.0),
    setting(300, 0.25, 16),
    # added after the first pass: its cheapest Pareto point (#8) still missed the fine-tuning
    # stage's time budget, so fewer rows, trees and features per split, from there
    setting(25, 0.25), setting(50, 0.25, features=0.15), setting(50, 0.25, 12),
    setting(25, 0.25, features=0.15), setting(100, 0.25, features=0.1),
]
BASELINE = 0  # index of the project default in GRID


def describe(params: dict) -> str:
    parts = [f"{params['n_estimators']} trees"]
    if params["max_samples"] is not None:
        parts.append(f"samples {params['max_samples']}")
    if params["max_depth"] is not None:
        parts.append(f"depth {params['max_depth']}")
    parts.append(f"leaf {params['min_samples_leaf']}")
    parts.append(f"features {params['max_features']}")
    return ", ".join(parts)


def name_of(params: dict) -> str:
    return next((name for name, p in NAMED.items() if p == params), "")


# ------------------------------------------------------------------------------- catchments
def huc2_regions(path: Path = REFERENCE) -> dict[str, str]:
    """gauge id -> HUC2 region; empty when the reference table is not there."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"id": str})
    return {g: f"{int(r):02d}" for g, r in zip(table["id"], table["HUC2"])}


def stratified(gauges: list[str], region_of: dict[str, str], n: int, seed: int) -> list[str]:
    """``n`` catchments, at least one per region (while ``n`` allows), the rest in proportion
    to the regions' sizes; which ones within a region is drawn by ``seed``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for g in sorted(gauges):
        groups[region_of.get(g, "unknown")].append(g)
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    if n < len(names):
        names = sorted(str(r) for r in rng.choice(names, n, replace=False))
    quota = {r: 1 for r in names}
    total = sum(len(groups[r]) for r in names)
    while sum(quota.values()) < min(n, total):
        # the region furthest below its proportional share gets the next catchment
        region = max((r for r in names if quota[r] < len(groups[r])),
                     key=lambda r: (n * len(groups[r]) / total - quota[r], r))
        quota[region] += 1
    picked = [str(g) for r in names for g in rng.choice(groups[r], quota[r], replace=False)]
    return sorted(picked)


# ------------------------------------------------------------------------------- the work
def evaluate(url: str, options: dict, gauge_id: str, grid: list[tuple[int, dict]], seed: int,
             repeats: int) -> list[dict]:
    """Every setting on one catchment, in a worker process (one core)."""
    import joblib

    from hybrid.decoder.regressors import make_decoder
    from hybrid.evaluation.metrics import nse
    from hybrid.store.storage import open_store

    store = open_store(url, options)
    table = partitions.read_partition(store, layout.ENCODED, gauge_id).to_pandas()
    hidden = sum(c.startswith("h_") for c in table.columns)
    x = table[layout.feature_columns(hidden)].to_numpy(np.float32)
    observed = table["observed"].to_numpy(np.float64)
    train = (table["split"] == "train").to_numpy() & np.isfinite(observed)
    test = (table["split"] == "test").to_numpy()
    rows = []
    for index, params in grid:
        fits = []
        for _ in range(repeats):
            model = make_decoder("rf", params, n_jobs=1, seed=seed)
            started = time.perf_counter()
            model.fit(x[train], observed[train])
            fits.append(time.perf_counter() - started)
        started = time.perf_counter()
        predicted = model.predict(x[test])
        predict_s = time.perf_counter() - started
        buf = io.BytesIO()
        joblib.dump(model, buf, compress=3)
        rows.append({"setting": index, "gauge_id": gauge_id, "nse": nse(observed[test], predicted),
                     "fit_s": statistics.median(fits), "predict_s": predict_s,
                     "size_mb": len(buf.getvalue()) / 2**20, "n_train": int(train.sum()),
                     "n_test": int(test.sum()), "features": hidden})
    return rows


def measure(store, gauges: list[str], grid: list[tuple[int, dict]], seed: int, repeats: int,
            workers: int) -> pd.DataFrame:
    rows: list[dict] = []
    started = time.perf_counter()
    # spawn, not fork: a forked child inherits whatever thread pools the parent has started
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(evaluate, store.url, dict(store.storage_options), g, grid, seed,
                               repeats): g for g in gauges}
        for done, future in enumerate(as_completed(futures), 1):
            rows += future.result()
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (len(gauges) - done)
            print(f"  [{done}/{len(gauges)}] {futures[future]} done, {elapsed:.0f} s elapsed, "
                  f"~{eta:.0f} s left; {load()}", flush=True)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- the front
def pareto(fit: np.ndarray, score: np.ndarray) -> np.ndarray:
    """True where no other setting is at least as fast and as accurate, and better in one."""
    score = np.where(np.isfinite(score), score, -np.inf)
    out = np.ones(len(fit), bool)
    for i in range(len(fit)):
        no_worse = (fit <= fit[i]) & (score >= score[i])
        better = (fit < fit[i]) | (score > score[i])
        out[i] = not (no_worse & better).any()
    return out


def summarise(raw: pd.DataFrame, grid: list[tuple[int, dict]], baseline: int) -> pd.DataFrame:
    per = raw.groupby("setting").agg(
        median_nse=("nse", "median"), fit_s=("fit_s", "median"),
        predict_s=("predict_s", "median"), size_mb=("size_mb", "median"),
        catchments=("gauge_id", "nunique"))
    # paired by catchment: the spread between catchments is far larger than between settings
    nse = raw.pivot(index="gauge_id", columns="setting", values="nse")
    per["delta_nse"] = nse.sub(nse[baseline], axis=0).median()
    per["fit_ratio"] = per["fit_s"] / per.loc[baseline, "fit_s"]
    per["size_ratio"] = per["size_mb"] / per.loc[baseline, "size_mb"]
    params = pd.DataFrame([{"setting": i, **p} for i, p in grid]).set_index("setting")
    per = params.join(per)
    per["label"] = [describe(p) for _, p in grid]
    per["name"] = [name_of(p) for _, p in grid]
    per["mean_delta_nse"] = nse.sub(nse[baseline], axis=0).mean()
    per["pareto"] = pareto(per["fit_s"].to_numpy(), per["median_nse"].to_numpy())
    # "as good" by every summary: the paired change against the baseline catchment by catchment
    # (median and mean), and the median over catchments, which is what a run reports; the
    # last alone moves with whichever catchment lands in the middle
    base_median = per.loc[baseline, "median_nse"]
    good = per[(per["delta_nse"] >= -KNEE_TOLERANCE) & (per["mean_delta_nse"] >= -KNEE_TOLERANCE)
               & (per["median_nse"] >= base_median - KNEE_TOLERANCE)]
    per["knee"] = per.index == good["fit_s"].idxmin()
    return per.sort_values("fit_s")


def print_table(per: pd.DataFrame, baseline: int) -> None:
    base = per.loc[baseline]
    print(f"\nbaseline for the ratios and the paired NSE change: #{baseline} "
          f"{base['name'] or base['label']} (measured in this same pass)")
    width = int(per["label"].str.len().max())
    print(f"{'#':>3} {'setting':<{width}} {'NSE':>6} {'dNSE':>7} {'fit s':>7} {'x base':>6} "
          f"{'pred s':>6} {'MB':>6} {'x base':>6}  front")
    for index, row in per.iterrows():
        marks = " ".join(m for m in ("pareto" if row["pareto"] else "",
                                     "KNEE" if row["knee"] else "", row["name"]) if m)
        print(f"{index:>3} {row['label']:<{width}} {row['median_nse']:6.3f} "
              f"{row['delta_nse']:+7.3f} {row['fit_s']:7.2f} {row['fit_ratio']:6.2f} "
              f"{row['predict_s']:6.2f} {row['size_mb']:6.1f} {row['size_ratio']:6.2f}  {marks}")
    knee = per[per["knee"]].iloc[0]
    print(f"\nknee: #{knee.name} {knee['label']}: median NSE {knee['median_nse']:.3f}, "
          f"paired change {knee['delta_nse']:+.4f} (median) / {knee['mean_delta_nse']:+.4f} "
          f"(mean) against the baseline (tolerance {KNEE_TOLERANCE}), fit "
          f"{knee['fit_s']:.2f} s = {knee['fit_ratio']:.2f}x the baseline, "
          f"{knee['size_mb']:.1f} MB = {knee['size_ratio']:.2f}x")
    print("NSE: median test NSE over the catchments; dNSE: median over catchments of the change "
          "against the baseline; fit / pred s: median per catchment, n_jobs=1; MB: joblib "
          "compress=3")


def plot(per: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(per["fit_s"], per["median_nse"], color="0.6", label="setting")
    front = per[per["pareto"]].sort_values("fit_s")
    ax.step(front["fit_s"], front["median_nse"], where="post", color="C0", lw=1)
    ax.scatter(front["fit_s"], front["median_nse"], color="C0", zorder=3, label="Pareto-optimal")
    for index, row in per.iterrows():
        text = row["name"] or (row["label"] if row["pareto"] else f"#{index}")
        ax.annotate(text + (" (knee)" if row["knee"] else ""), (row["fit_s"], row["median_nse"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    seconds = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(seconds)
    ax.xaxis.set_minor_formatter(seconds)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("median fit time per catchment, s (n_jobs=1, log scale)")
    ax.set_ylabel("median test NSE over catchments")
    ax.set_title(f"Random-forest decoder settings, {int(per['catchments'].max())} catchments")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")  # fast and accurate at once: the corner that stays empty
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", help="a finished run folder (with encoded/ partitions)")
    parser.add_argument("--catchments", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1, help="fits per setting and catchment")
    parser.add_argument("--workers", type=int, default=2, help="catchments fitted at once")
    parser.add_argument("--seed", type=int, default=0, help="which catchments are drawn")
    parser.add_argument("--settings", help="comma-separated GRID indices (default: all)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the CSV and PNG")
    parser.add_argument("--list", action="store_true", help="print the grid and stop")
    parser.add_argument("--combine", nargs="+", metavar="CSV",
                        help="summarise earlier passes' rf_pareto_catchments.csv files together "
                             "(same catchments; a setting measured twice keeps its first "
                             "pass) into --out, without fitting anything")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine, Path(args.out))
        return
    if args.list or not args.run:
        for index, params in enumerate(GRID):
            print(f"{index:>3} {describe(params)}" + (f" [{name_of(params)}]"
                                                       if name_of(params) else ""))
        if not args.list:
            parser.error("--run is required")
        return
    chosen = sorted({int(i) for i in args.settings.split(",")}) if args.settings \
        else list(range(len(GRID)))
    grid = [(i, GRID[i]) for i in chosen]
    baseline = BASELINE if BASELINE in chosen else chosen[0]

    store, cfg = open_finished_run(args.run)
    manifest = partitions.read_manifest(store, layout.ENCODED)
    encoded = sorted(manifest["catchments"]) if manifest \
        else sorted(partitions.present_partitions(store, layout.ENCODED))
    if not encoded:
        raise SystemExit(f"{store.uri(layout.ENCODED)}: no encoded catchment; run `hybrid "
                         "encode` first")
    region_of = huc2_regions()
    gauges = stratified(encoded, region_of, args.catchments, args.seed)
    per_region = pd.Series([region_of.get(g, "unknown") for g in gauges]).value_counts()

    print(machine())
    print(f"run {store.uri()}: {len(encoded)} encoded catchments, hidden {cfg.hidden_size}, "
          f"encoder {cfg.encoder}; decoder seed {cfg.seed}")
    print(f"{len(gauges)} catchments, stratified by HUC2 (seed {args.seed}): "
          + ", ".join(f"{r}: {n}" for r, n in sorted(per_region.items())))
    print(f"{len(grid)} settings x {args.repeats} fit(s); {args.workers} worker processes "
          f"(ProcessPoolExecutor), one catchment each at a time, every forest with n_jobs=1, "
          "so each worker holds one core")
    started = time.perf_counter()
    raw = measure(store, gauges, grid, cfg.seed, args.repeats, args.workers)
    wall = time.perf_counter() - started
    per = summarise(raw, grid, baseline)
    print_table(per, baseline)
    first = raw.iloc[0]
    print(f"{len(gauges)} catchments, median {int(raw['n_train'].median())} training and "
          f"{int(raw['n_test'].median())} test days x {first['features']} features; "
          f"{wall:.0f} s wall in all; {load()}")

    write_outputs(per, raw, Path(args.out))


def write_outputs(per: pd.DataFrame, raw: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    per.to_csv(out / "rf_pareto.csv", index_label="setting")
    raw.to_csv(out / "rf_pareto_catchments.csv", index=False)
    plot(per, out / "rf_pareto.png")
    print(f"wrote {out / 'rf_pareto.csv'}, {out / 'rf_pareto_catchments.csv'}, "
          f"{out / 'rf_pareto.png'}")


def combine(paths: list[str], out: Path) -> None:
    frames, seen = [], set()
    for path in paths:
        raw = pd.read_csv(path, dtype={"gauge_id": str})
        frames.append(raw[~raw["setting"].isin(seen)])
        seen |= set(raw["setting"])
    raw = pd.concat(frames, ignore_index=True)
    grid = [(i, GRID[i]) for i in sorted(seen)]
    per = summarise(raw, grid, BASELINE)
    print_table(per, BASELINE)
    print(f"combined {len(paths)} passes")
    write_outputs(per, raw, out)


if __name__ == "__main__":
    main()
