"""Training recipes for the regional LSTM, judged by validation NSE per minute on this CPU.

Each recipe trains the regional model of ``configs/caravan_camels_us.yml`` (421 CAMELS-US
catchments, 371 in training) for the same wall time; after every epoch the median NSE over the
full validation period (1999-10..2004-09) of all 371 training catchments is recorded, with the
wall and CPU time spent so far. The catchment store is prepared once and shared; each recipe
writes its checkpoints and history under ``<store>/recipe-models/<name>/``.

    python benchmarks/bench_recipes.py --minutes 15                       # every recipe
    python benchmarks/bench_recipes.py --minutes 15 --only s2s-h64        # one of them
    python benchmarks/bench_recipes.py --plot-only                        # redraw the PNG

The ``nl-*`` recipes (issue 17) are judged for new locations instead: each is the shipped
recipe with 10% of the training pool held out of the gradient steps (spatial validation, the
same 37 catchments for every recipe), trained for the same number of windows (``--epochs``,
so that a recipe's score does not depend on what else shared the cores), and scored per epoch
on the held-out catchments; their plot is ``benchmarks/results/recipes_new_locations.png``.

    python benchmarks/bench_recipes.py --only nl-era5-pet nl-oudin-pet --epochs 6 --threads 1

Prints one line per epoch and a final table; the plot goes to
``benchmarks/results/recipes.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import REPO, machine, require_caravan  # noqa: E402

#: overrides of configs/caravan_camels_us.yml; samples per epoch are set so that an epoch
#: takes roughly a minute and a half on the development VM
RECIPES = {
    # the config of the first 421-catchment run: many-to-one with the loss on 30 days
    "m2o-h64-n30": {"seq_length": 365, "predict_last_n": 30, "hidden_size": 64,
                    "batch_size": 256, "max_train_samples_per_epoch": 60_000},
    # sequence-to-sequence: a 365-day warm-up, then the loss on every one of the next 365 days
    "s2s-h64": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 64, "batch_size": 32,
                "max_train_samples_per_epoch": 30_000},
    "s2s-h128": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 128,
                 "batch_size": 32, "max_train_samples_per_epoch": 12_000},
    "s2s-h128-bf16": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 128,
                      "batch_size": 32, "max_train_samples_per_epoch": 20_000,
                      "precision": "bf16"},
    "s2s-h64-nse": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 64,
                    "batch_size": 32, "max_train_samples_per_epoch": 30_000, "loss": "nse"},
    # the two winners together, and with twice the optimiser steps per minute (batch 16 costs
    # no throughput on this CPU: benchmarks/results/training_speed.txt)
    "s2s-h128-bf16-nse": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 128,
                          "batch_size": 32, "max_train_samples_per_epoch": 20_000,
                          "precision": "bf16", "loss": "nse"},
    "s2s-h128-bf16-nse-b16": {"seq_length": 730, "predict_last_n": 365, "hidden_size": 128,
                              "batch_size": 16, "max_train_samples_per_epoch": 20_000,
                              "precision": "bf16", "loss": "nse"},
}
#: issue 17: the shipped recipe (configs/caravan_camels_us.yml) judged on held-out catchments;
#: ``nl-era5-pet`` is that recipe unchanged, each other one changes one thing
SPATIAL = {"validation_basin_fraction": 0.1, "split_seed": 42}
ERA5, OUDIN = "potential_evaporation_sum", "pet_oudin"
RAIN_TEMP = ["total_precipitation_sum", "temperature_2m_mean"]
RECIPES.update({
    "nl-era5-pet": {**SPATIAL},
    "nl-no-pet": {**SPATIAL, "dynamic_inputs": RAIN_TEMP},
    "nl-oudin-pet": {**SPATIAL, "dynamic_inputs": [*RAIN_TEMP, OUDIN]},
    "nl-weight-decay": {**SPATIAL, "weight_decay": 1e-4},
    "nl-target-noise": {**SPATIAL, "target_noise_std": 0.05},
    "nl-input-noise": {**SPATIAL, "input_noise_std": 0.1},
    "nl-h64": {**SPATIAL, "hidden_size": 64},
})
#: what the catchment store holds for every recipe: Oudin PET beside Caravan's own inputs
DERIVED = {OUDIN: {"temperature": "temperature_2m_mean", "latitude": "gauge_lat"}}
RESULTS = REPO / "benchmarks" / "results"


def recipe_config(name: str, minutes: float, store: str, epochs: int = 1000, threads: int = 0,
                  seed: int | None = None):
    from hybrid.config import load_config

    base = load_config(REPO / "configs" / "caravan_camels_us.yml")
    data = base.to_dict()
    data.update(RECIPES[name])
    data.update(run_id=f"recipe-{name}", store=store, epochs=epochs, patience=1000,
                max_train_minutes=minutes, max_validation_samples=None,
                data_dir=str(require_caravan()), derived_inputs=DERIVED)
    data["num_threads"] = threads
    if seed is not None:  # another member of a seed ensemble: same split, other weights
        data.update(seed=seed, run_id=f"recipe-{name}-s{seed}")
    from hybrid.config import config_from_dict

    return config_from_dict(data)


def prepared(store_url: str):
    """The shared catchment store of the 421 catchments (prepared once)."""
    from hybrid.config import config_from_dict, load_config
    from hybrid.stages.prepare import prepare
    from hybrid.store.runs import open_run

    base = load_config(REPO / "configs" / "caravan_camels_us.yml")
    # the longest window of any recipe decides the first day the store must hold
    data = {**base.to_dict(), "run_id": "recipes-data", "store": store_url,
            "seq_length": max(r.get("seq_length", base.seq_length) for r in RECIPES.values()),
            "predict_last_n": 1, "data_dir": str(require_caravan()), "derived_inputs": DERIVED,
            # the canonical tables keep the inputs asked for: every recipe's, derived ones too
            "dynamic_inputs": list(dict.fromkeys(
                x for r in [base.to_dict(), *RECIPES.values()] for x in r.get(
                    "dynamic_inputs", base.dynamic_inputs)))}
    cfg = config_from_dict(data)
    store = open_run(cfg)
    prepare(cfg, store)
    return cfg, store


def run_recipe(name: str, minutes: float, store_url: str, epochs: int = 1000,
               threads: int = 0, seed: int | None = None) -> list[dict]:
    from hybrid.data.catalog import split_catchments, usable_catchments
    from hybrid.encoder.trainer import Trainer, catchment_split

    data_cfg, data = prepared(store_url)
    cfg = recipe_config(name, minutes, store_url, epochs, threads, seed)
    label = name if seed is None else f"{name}-s{seed}"
    # the recorded split has no held-out catchments; spatial recipes draw theirs from it
    split = catchment_split(data, data_cfg) if not cfg.validation_basin_fraction else \
        split_catchments(usable_catchments(data), cfg)
    from hybrid.store.storage import open_store

    out = open_store(store_url).child("recipe-models", label)
    started = time.monotonic()
    trainer = Trainer(data, out, cfg, split, device="cpu")
    setup = time.monotonic() - started
    trainer.train(final_key="checkpoints/final.pt")
    history = trainer.state.history
    elapsed, cpu = 0.0, 0.0
    for row in history:
        elapsed += row["seconds"]
        cpu += row.get("cpu_seconds", 0.0)
        row.update(recipe=label, train_minutes=elapsed / 60, cpu_minutes=cpu / 60)
    (RESULTS / f"recipe-{label}.json").write_text(json.dumps(
        {"recipe": label, "seed": cfg.seed, "overrides": RECIPES[name], "minutes": minutes,
         "epochs": epochs,
         "threads": threads, "best_epoch": trainer.state.best_epoch, "setup_seconds": setup,
         "machine": machine(), "load_average_at_end": os.getloadavg(), "history": history},
        indent=1, default=float))
    return history


def plot_new_locations() -> Path:
    """Per epoch: the held-out catchments' median NSE and loss of every ``nl-*`` recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_nse, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.5))
    for path in sorted(RESULTS.glob("recipe-nl-*.json")):
        run = json.loads(path.read_text())
        epochs = [r["epoch"] for r in run["history"]]
        for ax, key in ((ax_nse, "spatial_validation_nse"), (ax_loss, "spatial_validation_loss")):
            ax.plot(epochs, [r[key] for r in run["history"]], "o-", ms=3, label=run["recipe"])
    ax_nse.set(xlabel="epoch (20,000 windows each)", ylabel="median NSE, 37 held-out catchments")
    ax_loss.set(xlabel="epoch (20,000 windows each)", ylabel="NSE* loss, 37 held-out catchments")
    for ax in (ax_nse, ax_loss):
        ax.grid(alpha=0.3)
    ax_nse.legend(fontsize=8)
    fig.suptitle("Recipes judged on catchments held out of training (421 CAMELS-US, Caravan)")
    out = RESULTS / "recipes_new_locations.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def plot() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for path in sorted(RESULTS.glob("recipe-*.json")):
        if path.name.startswith("recipe-nl-"):  # judged on other catchments: their own plot
            continue
        run = json.loads(path.read_text())
        h = run["history"]
        ax.plot([r["train_minutes"] for r in h], [r["validation_nse"] for r in h], "o-",
                ms=3, label=run["recipe"])
    ax.set(xlabel="training wall time on 2 CPU cores (minutes)",
           ylabel="median validation NSE (371 training catchments)",
           title="Regional LSTM recipes on 421 CAMELS-US catchments")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = RESULTS / "recipes.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time per recipe")
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=1000,
                        help="a budget in windows (epochs of the recipe's size) instead of time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, help="weights' seed (the split stays split_seed's)")
    parser.add_argument("--store", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        print(machine(), "| load average", os.getloadavg(), flush=True)
        for name in args.only or list(RECIPES):
            history = run_recipe(name, args.minutes, args.store, args.epochs, args.threads,
                                 args.seed)
            key = "spatial_validation_nse" if name.startswith("nl-") else "validation_nse"
            best = max(history, key=lambda r: r[key])
            print(f"recipe {name}: {len(history)} epochs in {history[-1]['train_minutes']:.1f} "
                  f"min, best median {key} {best[key]:.3f} (epoch "
                  f"{best['epoch']}, {best['train_minutes']:.1f} min)", flush=True)
    print(f"plot: {plot()}, {plot_new_locations()}")


if __name__ == "__main__":
    main()
