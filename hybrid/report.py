"""``report.md`` and PNG plots in the run folder, made only from the run's own Parquet outputs."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hybrid.config import Config  # noqa: E402
from hybrid.decode import PREDICTIONS  # noqa: E402
from hybrid.prepare import partition_key  # noqa: E402
from hybrid.storage import Store  # noqa: E402
from hybrid.summary import AGGREGATE, SUMMARY, headline  # noqa: E402

COLORS = {"regional": "tab:blue", "hybrid": "tab:orange", "catchment_wise": "tab:green"}


def _save(store: Store, key: str, fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    store.write_bytes(key, buf.getvalue())
    return key


def plot_nse_cdf(summary: pd.DataFrame, store: Store) -> str:
    """The paper's headline figure: the distribution of NSE over catchments, per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    groups = [("all catchments", summary),
              ("out-of-training catchments", summary[~summary.in_training.astype(bool)])]
    for ax, (title, part) in zip(axes, groups):
        for model, sub in part.groupby("model"):
            values = np.sort(sub["nse"].dropna().to_numpy())
            if len(values) == 0:
                continue
            # start each curve at 0: an empirical CDF of one catchment is one visible step
            x = np.clip(np.concatenate([values[:1], values]), -1, 1)
            y = np.arange(len(values) + 1) / len(values)
            ax.step(x, y, where="post", color=COLORS.get(model), label=f"{model} (median "
                    f"{np.median(values):.3f}, n={len(values)})")
        ax.set(xlim=(-1, 1), ylim=(0, 1.02), xlabel="NSE (clipped at -1)", title=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("fraction of catchments")
    return _save(store, "report/nse_cdf.png", fig)


def plot_scatter(summary: pd.DataFrame, store: Store) -> str:
    wide = summary.pivot_table(index=["gauge_id", "in_training"], columns="model",
                               values="nse").reset_index()
    fig, ax = plt.subplots(figsize=(5, 5))
    for flag, label, marker in ((True, "in training", "o"), (False, "out of training", "^")):
        part = wide[wide.in_training.astype(bool) == flag]
        ax.scatter(part["regional"].clip(-1, 1), part["hybrid"].clip(-1, 1), s=14,
                   marker=marker, alpha=0.7, label=f"{label} (n={len(part)})")
    ax.plot([-1, 1], [-1, 1], color="grey", lw=1)
    better = (wide["hybrid"] > wide["regional"]).sum()
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="regional LSTM NSE", ylabel="hybrid NSE",
           title=f"hybrid better on {better} of {len(wide)} catchments")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(store, "report/nse_scatter.png", fig)


def plot_hydrographs(summary: pd.DataFrame, store: Store) -> tuple[str, list[str]]:
    hybrid = summary[summary.model == "hybrid"].dropna(subset=["nse"]).sort_values("nse")
    if hybrid.empty:
        return "", []
    picks = {"worst": hybrid.iloc[0], "median": hybrid.iloc[len(hybrid) // 2],
             "best": hybrid.iloc[-1]}
    fig, axes = plt.subplots(3, 1, figsize=(11, 9))
    for ax, (label, row) in zip(axes, picks.items()):
        pred = store.read_frame(partition_key(PREDICTIONS, row.gauge_id))
        last = pred.tail(730)  # two years keep single events readable
        ax.plot(last["date"], last["observed"], color="black", lw=1, label="observed")
        for model in ("regional", "hybrid", "catchment_wise"):
            if model in last:
                ax.plot(last["date"], last[model], color=COLORS[model], lw=0.9, label=model)
        nse = summary[(summary.gauge_id == row.gauge_id)].set_index("model")["nse"]
        ax.set_title(f"{label}: {row.gauge_id} — NSE " + ", ".join(
            f"{m} {v:.2f}" for m, v in nse.items()), fontsize=9)
        ax.set_ylabel("streamflow")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(store, "report/hydrographs.png", fig), [p.gauge_id for p in picks.values()]


def write_report(store: Store, cfg: Config) -> str:
    summary = store.read_frame(SUMMARY)
    agg = store.read_frame(AGGREGATE)
    done = summary[summary.status == "done"]
    failed = summary[summary.status == "failed"]
    cdf = plot_nse_cdf(done, store)
    scatter = plot_scatter(done, store) if {"regional", "hybrid"} <= set(done.model) else ""
    hydro, picked = plot_hydrographs(done, store)
    timings = store.read_json("timings.json") if store.exists("timings.json") else {}
    lines = [
        f"# Run `{cfg.run_id}`",
        "",
        f"Dataset `{cfg.dataset}`, {done.gauge_id.nunique()} catchments scored "
        f"({int(done.drop_duplicates('gauge_id').in_training.sum())} in the LSTM's training "
        f"set), test period {cfg.test_start_date} .. {cfg.test_end_date}; encoder "
        f"`{cfg.encoder}`, hidden size {cfg.hidden_size}, decoder `{cfg.decoder.name}`.",
        "",
        "## Median skill",
        "",
        "```",
        headline(agg),
        "```",
        "",
        "## Aggregates",
        "",
        agg.round(3).to_markdown(index=False) if _has_tabulate() else
        "```\n" + agg.round(3).to_string(index=False) + "\n```",
        "",
        "## Figures",
        "",
        f"![NSE CDF]({cdf.split('/')[-1]})",
    ]
    if scatter:
        lines.append(f"![hybrid vs regional]({scatter.split('/')[-1]})")
    if hydro:
        lines += ["", f"Hydrographs (last two test years) of the worst, median and best "
                      f"catchment by hybrid NSE: {', '.join(picked)}.", "",
                  f"![hydrographs]({hydro.split('/')[-1]})"]
    if timings:
        lines += ["", "## Stage wall times", ""]
        lines += [f"- {stage}: {t['seconds']:.1f} s" for stage, t in timings.items()]
    if len(failed):
        lines += ["", f"## Failed catchments ({len(failed)})", ""]
        lines += [f"- {r.gauge_id}: {r.error}" for r in failed.itertuples()]
    lines += ["", f"Data: `{store.uri(SUMMARY)}` (one row per catchment x model), "
                  f"`{store.uri(AGGREGATE)}`.", ""]
    store.write_text("report/report.md", "\n".join(lines))
    return store.uri("report/report.md")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
