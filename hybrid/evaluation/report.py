"""``report.md`` and PNG plots in the run folder, made only from the run's own Parquet outputs.

The report is rewritten only when the summary changed since it was written (its sha256 is kept
in the report), so reading a finished run, even a read-only copy, writes nothing.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hybrid.config import Config  # noqa: E402
from hybrid.errors import StoreError  # noqa: E402
from hybrid.evaluation.summary import headline  # noqa: E402
from hybrid.store import files, layout, partitions  # noqa: E402
from hybrid.store.provenance import sha256  # noqa: E402
from hybrid.store.runs import read_timings  # noqa: E402
from hybrid.store.storage import Store  # noqa: E402

COLORS = {layout.REGIONAL: "tab:blue", layout.HYBRID: "tab:orange",
          layout.CATCHMENT_WISE: "tab:green", layout.FINETUNED: "tab:purple"}
#: units of the targets of the supported datasets (all area-normalised except one)
UNITS = {"streamflow": "mm/d", "QObs(mm/d)": "", "discharge_spec_obs": "mm/d",
         "discharge_vol_obs": "m3/s"}
NSE_FLOOR = -1.0


def _save(store: Store, key: str, fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    store.write_bytes(key, buf.getvalue())
    return key.split("/")[-1]


def _label(target: str) -> str:
    unit = UNITS.get(target)
    return f"{target} ({unit})" if unit else target


def nse_cdf_panels(done: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) of the panels worth drawing: a group with no scored catchment is left
    out, and so is a group that holds every catchment (it would repeat "all catchments"); the
    one panel left then says which group that is."""
    scored = done[done["nse"].notna()]
    in_training = scored["in_training"].astype(bool)
    everyone = set(scored[layout.PARTITION_KEY])
    groups = [("in the LSTM's training set", scored[in_training]),
              ("out of training (new locations)", scored[~in_training])]
    kept = [(title, part) for title, part in groups if len(part)]
    if len(kept) == 1 and set(kept[0][1][layout.PARTITION_KEY]) == everyone:
        return [(f"all catchments: {kept[0][0]}", scored)]
    return [("all catchments", scored), *kept]


def nse_cdf_figure(done: pd.DataFrame, cfg: Config):
    """The paper's headline figure: the distribution of NSE over catchments, per model."""
    panels = nse_cdf_panels(done) or [("all catchments", done)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.4), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, (title, part) in zip(axes[0], panels):
        clipped = 0
        for model, sub in part.groupby("model"):
            values = np.sort(sub["nse"].dropna().to_numpy())
            if len(values) == 0:
                continue
            clipped = max(clipped, int((values < NSE_FLOOR).sum()))
            # start each curve at 0: an empirical CDF of one catchment is one visible step
            x = np.clip(np.concatenate([values[:1], values]), NSE_FLOOR, 1)
            y = np.arange(len(values) + 1) / len(values)
            ax.step(x, y, where="post", color=COLORS.get(model), label=f"{model} (median "
                    f"{np.median(values):.3f}, n={len(values)})")
        # five ticks and a short label per panel: nine two-decimal ticks ran together, and a
        # label with the period and the note overran into the neighbouring panel's
        ax.set_xticks(np.linspace(NSE_FLOOR, 1, 5))
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set(xlim=(NSE_FLOOR, 1), ylim=(0, 1.02), title=title, xlabel="test NSE"
               + (f"\n({clipped} below -1 drawn at -1)" if clipped else ""))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("fraction of catchments")
    fig.suptitle(f"test period {cfg.test_start_date} .. {cfg.test_end_date}", fontsize=10)
    return fig


def plot_nse_cdf(done: pd.DataFrame, store: Store, cfg: Config) -> str:
    return _save(store, "report/nse_cdf.png", nse_cdf_figure(done, cfg))


def plot_scatter(done: pd.DataFrame, store: Store, cfg: Config) -> str:
    wide = done.pivot_table(index=[layout.PARTITION_KEY, "in_training"], columns="model",
                            values="nse").reset_index()
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for flag, label, marker in ((True, "in training", "o"), (False, "out of training", "^")):
        part = wide[wide.in_training.astype(bool) == flag]
        ax.scatter(part["regional"].clip(NSE_FLOOR, 1), part["hybrid"].clip(NSE_FLOOR, 1),
                   s=14, marker=marker, alpha=0.7, label=f"{label} (n={len(part)})")
    ax.plot([NSE_FLOOR, 1], [NSE_FLOOR, 1], color="grey", lw=1)
    better = int((wide["hybrid"] > wide["regional"]).sum())
    clipped = int(((wide["hybrid"] < NSE_FLOOR) | (wide["regional"] < NSE_FLOOR)).sum())
    ax.set(xlim=(NSE_FLOOR - 0.02, 1), ylim=(NSE_FLOOR - 0.02, 1),
           xlabel="regional LSTM test NSE", ylabel="hybrid test NSE",
           title=f"hybrid better on {better} of {len(wide)} catchments"
                 + (f"\n({clipped} with an NSE below -1 drawn at -1)" if clipped else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(store, "report/nse_scatter.png", fig)


def plot_hydrographs(done: pd.DataFrame, store: Store, cfg: Config) -> tuple[str, list[str]]:
    hybrid = done[done.model == "hybrid"].dropna(subset=["nse"]).sort_values("nse")
    if hybrid.empty:
        return "", []
    picks = {"worst": hybrid.iloc[0], "median": hybrid.iloc[len(hybrid) // 2],
             "best": hybrid.iloc[-1]}
    fig, axes = plt.subplots(3, 1, figsize=(11, 9))
    for ax, (label, row) in zip(axes, picks.items()):
        gauge_id = getattr(row, layout.PARTITION_KEY)
        pred = partitions.read_partition(store, layout.PREDICTIONS, gauge_id).to_pandas()
        last = pred.tail(730)  # two years keep single events readable
        ax.plot(last["date"], last["observed"], color="black", lw=1, label="observed")
        for model in ("regional", "hybrid"):
            ax.plot(last["date"], last[model], color=COLORS[model], lw=0.9, label=model)
        nse = done[done[layout.PARTITION_KEY] == gauge_id].set_index("model")["nse"]
        group = "in training" if row.in_training else "out of training"
        ax.set_title(f"{label}: {gauge_id} ({group}), last two test years — NSE "
                     + ", ".join(f"{m} {v:.2f}" for m, v in nse.items()), fontsize=9)
        ax.set_ylabel(_label(cfg.target))
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(store, "report/hydrographs.png", fig), \
        [getattr(p, layout.PARTITION_KEY) for p in picks.values()]


LOSS_LABELS = {"mse": "MSE (standardised streamflow)",
               "nse": "NSE* loss (per-catchment weighted MSE)"}


def best_epoch(history: pd.DataFrame) -> int | None:
    """The epoch whose weights the run uses, by the trainer's rule: the first epoch with the
    lowest validation loss (training loss for an epoch without validation windows); None
    when no epoch has a finite loss (the trainer then keeps the last weights)."""
    if history is None or history.empty or "train_loss" not in history:
        return None
    loss = history["train_loss"].astype(float)
    # with held-out catchments (validation_basin_fraction) they pick the epoch
    key = "spatial_validation_loss" if "spatial_validation_loss" in history \
        else "validation_loss"
    if key in history:
        validation = history[key].astype(float)
        loss = validation.where(np.isfinite(validation), loss)
    finite = loss[np.isfinite(loss)]
    if finite.empty:
        return None
    return int(history.loc[finite.idxmin(), "epoch"])


def training_figure(history: pd.DataFrame, loss: str = "mse"):
    """Loss and validation NSE per epoch of the regional LSTM, with the epoch whose weights
    are used marked on both panels."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(history["epoch"], history["train_loss"], "o-", label="training loss")
    curves = (("validation", "training catchments' validation years", "tab:green"),
              ("spatial_validation", "held-out catchments", "tab:purple"))
    for prefix, what, colour in curves:
        if f"{prefix}_loss" in history and history[f"{prefix}_loss"].notna().any():
            left.plot(history["epoch"], history[f"{prefix}_loss"], "o-", color=colour,
                      label=f"validation loss: {what}")
        if f"{prefix}_nse" in history and history[f"{prefix}_nse"].notna().any():
            right.plot(history["epoch"], history[f"{prefix}_nse"], "o-", color=colour,
                       label=what)
    left.set(xlabel="epoch", ylabel=LOSS_LABELS.get(loss, loss))
    right.set(xlabel="epoch", ylabel="median validation NSE")
    best = best_epoch(history)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
        if best is not None:
            ax.axvline(best, color="black", ls="--", lw=1,
                       label=f"epoch {best}: the weights used")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training(history: pd.DataFrame, store: Store, loss: str = "mse") -> str:
    return _save(store, "report/training.png", training_figure(history, loss))


def write_report(store: Store, cfg: Config) -> str:
    summary_bytes = _summary_bytes(store)
    marker = f"<!-- summary sha256 {sha256(summary_bytes)} -->"
    if store.exists(layout.REPORT) and store.read_text(layout.REPORT).startswith(marker):
        return store.uri(layout.REPORT)  # up to date: nothing to write
    summary = pd.read_parquet(io.BytesIO(summary_bytes))
    agg = store.read_frame(layout.AGGREGATE)
    done = summary[summary.status == "done"]
    history = store.read_frame(layout.HISTORY) if store.exists(layout.HISTORY) else None
    n_done = done[layout.PARTITION_KEY].nunique()
    lines = [
        marker,
        f"# Run `{cfg.run_id}`",
        "",
        f"Dataset `{cfg.dataset}`: {summary[layout.PARTITION_KEY].nunique()} catchments, "
        f"{n_done} scored ({int(done.drop_duplicates(layout.PARTITION_KEY).in_training.sum())} "
        f"in the LSTM's training set), test period {cfg.test_start_date} .. "
        f"{cfg.test_end_date}; encoder `{cfg.encoder}`, hidden size {cfg.hidden_size}, decoder "
        f"`{cfg.decoder.name}`.",
        "",
        "## Median skill over the test period",
        "",
        "```",
        headline(agg),
        "```",
        "",
        "## Aggregates",
        "",
        "```",
        agg.round(3).to_string(index=False),
        "```",
        "",
        *negative_lines(done, cfg),
        "## Figures",
        "",
        *_figures(done, history, store, cfg),
        *_timing_lines(store, history),
        *_unfinished_lines(summary),
        "", "Data: [`../summary/summary.parquet`](../summary/summary.parquet) (one row per "
            "catchment x model), [`../summary/aggregate.parquet`]"
            "(../summary/aggregate.parquet).", "",
    ]
    store.write_text(layout.REPORT, "\n".join(lines))
    return store.uri(layout.REPORT)


def _summary_bytes(store: Store) -> bytes:
    """The summary file, or one line saying which command makes it."""
    if store.exists(layout.SUMMARY):
        data = store.read_bytes(layout.SUMMARY)
        reason = files.mismatch(store, layout.SUMMARY, data)
        if reason:
            raise StoreError(f"{reason}: rerun `hybrid score` to write it again")
        return data
    manifest = layout.manifest_key(layout.SUMMARY_DIR)
    if store.exists(manifest):
        raise StoreError(f"{store.uri(layout.SUMMARY)} is missing although its manifest is "
                         "there: rerun `hybrid decode` to write it again")
    raise StoreError(f"{store.uri(manifest)} not found: run `hybrid decode` first")


def _figures(done: pd.DataFrame, history: pd.DataFrame | None, store: Store, cfg: Config
             ) -> list[str]:
    figures = [f"![NSE distribution]({plot_nse_cdf(done, store, cfg)})"]
    # a model whose every NSE is missing (a diverged encoder) has no point to plot
    if set(layout.CORE_MODELS) <= set(done.dropna(subset=["nse"]).model):
        figures.append(f"![hybrid vs regional]({plot_scatter(done, store, cfg)})")
    if history is not None:
        curve = plot_training(history, store, cfg.loss)
        figures += ["", "Training of the regional LSTM (per epoch):", "",
                    f"![training curve]({curve})"]
    hydro, picked = plot_hydrographs(done, store, cfg)
    if hydro:
        figures += ["", f"Hydrographs of the worst, median and best catchment by hybrid NSE "
                        f"({', '.join(picked)}):", "", f"![hydrographs]({hydro})"]
    return figures


#: catchments listed by name in the report's section on negative predictions
NEGATIVE_LISTED = 20


def negative_lines(done: pd.DataFrame, cfg: Config) -> list[str]:
    """Which catchments got negative streamflow, per model: a flow below zero is no flow, and a
    median NSE does not show it. An older summary without the count says nothing."""
    if "n_negative" not in done or done["n_negative"].isna().all():
        return []
    lines = ["## Negative predictions", ""]
    if cfg.clip_targets_to_zero:
        return lines + [f"Predictions of {cfg.target} are clipped at zero "
                        "(`clip_targets_to_zero: true`).", ""]
    wide = done.pivot_table(index=layout.PARTITION_KEY, columns="model", values="n_negative",
                            aggfunc="sum", fill_value=0)
    wide = wide[wide.sum(axis=1) > 0]
    if wide.empty:
        return lines + [f"No model predicted a negative {cfg.target} on a test day.", ""]
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    per_model = ", ".join(f"{model} {int((wide[model] > 0).sum())}" for model in wide.columns)
    lines += [f"Catchments with a negative {cfg.target} predicted on some test days, per model: "
              f"{per_model} (of {done[layout.PARTITION_KEY].nunique()}). The table counts "
              "those days; the summary's `n_negative` column has every count, and "
              "`clip_targets_to_zero: true` clips predictions at zero.", "",
              "| catchment | " + " | ".join(map(str, wide.columns)) + " |",
              "|---|" + "---|" * len(wide.columns)]
    lines += [f"| {gauge_id} | " + " | ".join(str(int(v)) for v in row) + " |"
              for gauge_id, row in wide.head(NEGATIVE_LISTED).iterrows()]
    if len(wide) > NEGATIVE_LISTED:
        lines += ["", f"... and {len(wide) - NEGATIVE_LISTED} more catchment(s)."]
    return lines + [""]


def _timing_lines(store: Store, history: pd.DataFrame | None) -> list[str]:
    timings = read_timings(store)
    if not timings:
        return []
    order = layout.STAGE_ORDER
    ordered = sorted(timings.items(), key=lambda kv: order.index(kv[0])
                     if kv[0] in order else len(order))
    lines = ["", "## Stage wall times", ""]
    lines += [f"- {stage}: {t['seconds']:.1f} s" for stage, t in ordered]
    lines += [f"- total: {sum(t['seconds'] for _, t in ordered):.1f} s (each stage's last pass)"]
    # a resumed training's last pass is only its tail
    if history is not None and "seconds" in history:
        lines += [f"- training of the regional LSTM over all passes: "
                  f"{history['seconds'].sum():.0f} s in {len(history)} epochs"]
    return lines


def _unfinished_lines(summary: pd.DataFrame) -> list[str]:
    keys = [layout.PARTITION_KEY, "status", "stage", "error"]
    not_done = summary[summary.status != "done"].groupby(keys, sort=True)["model"].agg(
        lambda models: ", ".join(sorted(models))).reset_index()
    lines = []
    for status in ("failed", "skipped"):
        part = not_done[not_done.status == status]
        if len(part):
            lines += ["", f"## {status.capitalize()} catchments "
                          f"({part[layout.PARTITION_KEY].nunique()})", ""]
            lines += [f"- {getattr(r, layout.PARTITION_KEY)} at {r.stage} ({r.model}): "
                      f"{r.error}" for r in part.itertuples()]
    return lines
