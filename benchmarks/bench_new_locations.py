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
"""

from __future__ import annotations

import argparse
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


def evaluate(base: str, gauges: list[str], scratch: str, name: str) -> dict:
    from hybrid.stages import run_all

    cfg = scratch_config(base, gauges, scratch, {"run_id": name})
    started = time.perf_counter()
    outcome = run_all(cfg)
    done = outcome.summary[outcome.summary.status == "done"]
    medians = done.groupby("model")["nse"].median()
    return {"variant": name, "regional": medians.get("regional"),
            "hybrid": medians.get("hybrid"), "catchments": done.gauge_id.nunique(),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="finished training run folder")
    parser.add_argument("--epochs", type=_epochs, default=[], help="single epochs, e.g. 4,7,11")
    parser.add_argument("--ensemble", type=_epochs, default=[], help="epochs of one ensemble")
    parser.add_argument("--basin-file", default=str(REPO / "configs" / "finetune_basins.txt"))
    args = parser.parse_args()
    import pandas as pd

    from hybrid.encoder.checkpoints import load_object
    from hybrid.store import layout
    from hybrid.store.storage import open_store

    print(machine(), "| load average", os.getloadavg(), flush=True)
    run = open_store(args.run)
    final = load_object(run, layout.FINAL)
    history = pd.DataFrame(final.get("history") or []).set_index("epoch")
    gauges = [line.strip() for line in Path(args.basin_file).read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        variants = [([e], f"epoch-{e:03d}") for e in args.epochs]
        if args.ensemble:
            variants.append((args.ensemble, "ensemble-" + "-".join(map(str, args.ensemble))))
        for epochs, name in variants:
            base = model_folder(run, final, epochs, Path(scratch) / "models" / name)
            row = evaluate(base, gauges, scratch, name)
            for column in ("validation_nse", "spatial_validation_nse"):
                if column in history and len(epochs) == 1:
                    row[column] = history.loc[epochs[0], column]
            print(row, flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    text = (f"{machine()}, load average {os.getloadavg()}\n\n"
            f"`python benchmarks/bench_new_locations.py --run {args.run} "
            f"--epochs {','.join(map(str, args.epochs))} "
            f"--ensemble {','.join(map(str, args.ensemble))}`\n\n"
            f"best epoch of the training: {final.get('best_epoch')}\n\n"
            + _markdown(table.round(3)) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "new_locations.md").write_text(text)
    print(text)


def _markdown(table) -> str:
    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
