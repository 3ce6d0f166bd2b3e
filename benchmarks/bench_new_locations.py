"""Skill at new locations of a trained encoder, per epoch and as a snapshot ensemble.

Issue 17's question: which encoder serves catchments it never saw? Given a finished training
(a run folder with ``checkpoints/final.pt`` and its ``epoch-NNN.pt``), this writes one model
folder per chosen epoch and one ensemble of several epochs (``hybrid.encoder.ensemble``), then
fine-tunes each on the same catchments exactly as a user would (``base_run``: encode + one
forest per catchment) and prints the median test NSE of the regional LSTM and of the hybrid.

    python benchmarks/bench_new_locations.py --run /work/runs17/spatial-s42 \\
        --epochs 4,7,11 --ensemble 4,7,11 --basin-file configs/finetune_basins.txt

``--basin-file`` defaults to the 50 catchments of ``configs/finetune_caravan.yml`` (kept out of
the shipped encoder's training). For a run trained with ``validation_basin_fraction``, the
history's temporal and spatial validation NSE per epoch are printed beside each row, so the
epoch each criterion picks can be compared with the skill it buys. Writes
``benchmarks/results/new_locations.md``.

Trained encoders can also be compared as they are (``--models``: model folders or recipe folders
of ``bench_recipes.py``, each holding ``checkpoints/final.pt``), and as one seed ensemble
(``--seed-ensemble``: the same folders' final weights read as one ``EnsembleLSTM``). For an
ensemble, two ways of feeding the forests are scored: the members' features side by side in one
forest (what ``hybrid`` does), and one forest per member with their predictions averaged (from
the ``--models`` runs of the same members). Each variant runs in this process (executor
``local``), and its row gives the process's CPU-seconds, so skill can be weighed per CPU-second
even while other jobs share the machine.

    python benchmarks/bench_new_locations.py --models A B C --seed-ensemble A B C --out nl.md
    python benchmarks/bench_new_locations.py --models A@3 B@3 --seed-ensemble A@3 B@3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import REPO, RESULTS, machine  # noqa: E402
from benchmarks.bench_finetune import scratch_config  # noqa: E402


def _epochs(text: str) -> list[int]:
    return [int(e) for e in text.split(",") if e.strip()]


def model_folder(run, final: dict, epochs: list[int], out: Path) -> str:
    """A model folder holding one epoch's weights, or an ensemble of several."""
    from hybrid.encoder.checkpoints import load_object, object_bytes
    from hybrid.encoder.ensemble import combine, snapshot
    from hybrid.store import layout
    from hybrid.store.storage import open_store

    members = [snapshot(final, load_object(run, layout.epoch_key(e)), e) for e in epochs]
    obj = members[0] if len(members) == 1 else combine(
        members, [f"epoch-{e:03d}" for e in epochs])
    store = open_store(str(out))
    store.write_bytes(layout.FINAL, object_bytes(obj))
    return str(out)


def evaluate(base: str, gauges: list[str], scratch: str, name: str,
             decoder: dict | None = None) -> dict:
    from hybrid.stages import run_all

    # in this process (no Ray workers), so its CPU time is the variant's whole cost even when
    # other jobs share the machine
    cfg = scratch_config(base, gauges, scratch, {"run_id": name,
                                                 "resources": {"executor": "local"},
                                                 **({"decoder": {"params": decoder}}
                                                    if decoder else {})})
    started, cpu = time.perf_counter(), time.process_time()
    outcome = run_all(cfg)
    done = outcome.summary[outcome.summary.status == "done"]
    medians = done.groupby("model")["nse"].median()
    return {"variant": name, "regional": medians.get("regional"),
            "hybrid": medians.get("hybrid"), "catchments": done.gauge_id.nunique(),
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "run": str(Path(scratch) / name)}


def member_average(rows: list[dict], name: str) -> dict:
    """One forest per member, predictions averaged day by day, scored on the test period."""
    import pandas as pd

    from hybrid.evaluation.metrics import nse

    first = rows[0]["run"]
    gauges = sorted(p.name for p in (Path(first) / "predictions").iterdir() if p.is_dir())
    scores = {"regional": [], "hybrid": []}
    for gauge in gauges:
        frames = [pd.read_parquet(Path(r["run"]) / "predictions" / gauge / "part-0.parquet")
                  .set_index("date") for r in rows]
        mean = sum(f[["regional", "hybrid"]] for f in frames) / len(frames)
        test = frames[0].observed.notna()
        for model in scores:
            scores[model].append(nse(frames[0].observed[test].to_numpy(),
                                     mean[model][test].to_numpy()))
    return {"variant": name, "regional": float(pd.Series(scores["regional"]).median()),
            "hybrid": float(pd.Series(scores["hybrid"]).median()), "catchments": len(gauges),
            "seconds": sum(r["seconds"] for r in rows),
            "cpu_seconds": sum(r["cpu_seconds"] for r in rows)}


def member_name(spec: str) -> str:
    """``FOLDER`` -> its name; ``FOLDER@E`` -> ``name.epoch-EEE`` (a valid run id)."""
    folder, _, epoch = spec.partition("@")
    return Path(folder).name + (f".epoch-{int(epoch):03d}" if epoch else "")


def member(spec: str) -> tuple[dict, str]:
    """(checkpoint, name) of ``FOLDER`` (its final weights) or ``FOLDER@E`` (its epoch E)."""
    from hybrid.encoder.checkpoints import load_object
    from hybrid.encoder.ensemble import snapshot
    from hybrid.store import layout
    from hybrid.store.storage import open_store

    folder, _, epoch = spec.partition("@")
    store = open_store(os.path.abspath(folder))
    final = load_object(store, layout.FINAL)
    if not epoch:
        return final, member_name(spec)
    return snapshot(final, load_object(store, layout.epoch_key(int(epoch))), int(epoch)), \
        member_name(spec)


def ensemble_folder(specs: list[str], out: Path) -> str:
    """Several trainings (same inputs and scaler) as one ensemble; ``FOLDER@E`` takes epoch E."""
    from hybrid.encoder.checkpoints import object_bytes
    from hybrid.encoder.ensemble import combine
    from hybrid.store import layout
    from hybrid.store.storage import open_store

    finals, names = zip(*(member(s) for s in specs))
    obj = finals[0] if len(finals) == 1 else combine(list(finals), list(names))
    open_store(str(out)).write_bytes(layout.FINAL, object_bytes(obj))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="finished training run folder (for --epochs/--ensemble)")
    parser.add_argument("--models", nargs="+", default=[],
                        help="model folders, each as it is; FOLDER@E: that training's epoch E")
    parser.add_argument("--seed-ensemble", nargs="+", default=[],
                        help="model folders read as one ensemble (also scored as averaged "
                             "forests when they are among --models)")
    parser.add_argument("--out", default="new_locations.md", help="file under results/")
    parser.add_argument("--decoder", default="{}",
                        help="decoder params for every variant, as JSON (default: the project's)")
    parser.add_argument("--write-ensemble", help="also keep the --seed-ensemble model folder here")
    parser.add_argument("--epochs", type=_epochs, default=[], help="single epochs, e.g. 4,7,11")
    parser.add_argument("--ensemble", type=_epochs, default=[], help="epochs of one ensemble")
    parser.add_argument("--basin-file", default=str(REPO / "configs" / "finetune_basins.txt"))
    args = parser.parse_args()
    import pandas as pd

    from hybrid.encoder.checkpoints import load_object
    from hybrid.store import layout
    from hybrid.store.storage import open_store

    print(machine(), "| load average", os.getloadavg(), flush=True)
    if args.write_ensemble:
        print("ensemble:", ensemble_folder(args.seed_ensemble, Path(args.write_ensemble)))
    gauges = [line.strip() for line in Path(args.basin_file).read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    final, history = {}, pd.DataFrame()
    if args.run:
        run = open_store(args.run)
        final = load_object(run, layout.FINAL)
        history = pd.DataFrame(final.get("history") or []).set_index("epoch")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        variants = [(model_folder(run, final, [e], Path(scratch) / "models" / f"epoch-{e:03d}"),
                     f"epoch-{e:03d}", e) for e in args.epochs]
        if args.ensemble:
            name = "ensemble-" + "-".join(map(str, args.ensemble))
            variants.append((model_folder(run, final, args.ensemble,
                                          Path(scratch) / "models" / name), name, None))
        variants += [(ensemble_folder([m], Path(scratch) / "models" / member_name(m))
                      if "@" in m else os.path.abspath(m), member_name(m), None)
                     for m in args.models]
        if args.seed_ensemble:
            name = "seed-ensemble-x" + str(len(args.seed_ensemble))
            variants.append((ensemble_folder(args.seed_ensemble, Path(scratch) / "models" / name),
                             name, None))
        for base, name, epoch in variants:
            row = evaluate(base, gauges, scratch, name, json.loads(args.decoder))
            for column in ("validation_nse", "spatial_validation_nse"):
                if column in history and epoch is not None:
                    row[column] = history.loc[epoch, column]
            print(row, flush=True)
            rows.append(row)
        members = [r for r in rows if r["variant"] in {member_name(m) for m in args.seed_ensemble}]
        if args.seed_ensemble and len(members) == len(args.seed_ensemble):
            rows.append(member_average(members, f"forest-per-member-x{len(members)}"))
            print(rows[-1], flush=True)
    for row in rows:
        row.pop("run", None)
    table = pd.DataFrame(rows)
    text = (f"{machine()}, load average {os.getloadavg()}\n\n"
            f"`python benchmarks/bench_new_locations.py {' '.join(sys.argv[1:])}`\n\n"
            + (f"best epoch of the training: {final.get('best_epoch')}\n\n" if final else "")
            + _markdown(table.round(3)) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(text)
    print(text)


def _markdown(table) -> str:
    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
