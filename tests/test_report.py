"""The report's figures and sections, from small tables: no pipeline, no store.

Readability is checked on the drawn figure (the boxes the renderer gives the tick labels and the
axis labels), not by eye; the panels drawn, the marked epoch and the listed catchments are
checked on the figure and the lines themselves.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hybrid.evaluation.report import best_epoch, negative_lines, nse_cdf_figure, training_figure


def _done(in_training: list[bool], seed: int = 0) -> pd.DataFrame:
    """Scored rows of one regional and one hybrid model per catchment, some NSE below -1."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, flag in enumerate(in_training):
        for model in ("regional", "hybrid"):
            rows.append({"gauge_id": f"g{i:02d}", "model": model, "in_training": flag,
                         "nse": float(rng.uniform(-1.5, 0.95)), "n_negative": i % 3})
    return pd.DataFrame(rows)


def _overlaps(boxes) -> list[tuple]:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


@pytest.fixture
def cfg(tiny_config):
    return tiny_config()


@pytest.mark.parametrize("in_training, titles", [
    ([True] * 6 + [False] * 4, ["all catchments", "in the LSTM's training set",
                                "out of training (new locations)"]),
    # a fine-tune run: no catchment in the base encoder's training set
    ([False] * 10, ["all catchments: out of training (new locations)"]),
    ([True] * 10, ["all catchments: in the LSTM's training set"]),
])
def test_nse_cdf_draws_only_panels_with_their_own_catchments(cfg, in_training, titles) -> None:
    fig = nse_cdf_figure(_done(in_training), cfg)
    try:
        assert [ax.get_title() for ax in fig.axes] == titles
        for ax in fig.axes:
            assert len(ax.get_lines()) == 2  # one curve per model on every panel drawn
    finally:
        plt.close(fig)


def test_nse_cdf_ticks_and_labels_do_not_run_together(cfg) -> None:
    """It drew nine two-decimal ticks per panel ("-1.00-0.75-0.50...") and long x-labels that
    reached into the neighbouring panel (a CAMELS-size run: counts of three digits in them)."""
    fig = nse_cdf_figure(_done([True] * 300 + [False] * 300), cfg)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()
                     if t.get_visible() and t.get_text()]
            assert len(ticks) >= 3
            assert _overlaps(ticks) == []
        xlabels = [ax.xaxis.label.get_window_extent(renderer) for ax in fig.axes]
        assert "below -1 drawn at -1" in fig.axes[0].get_xlabel()  # the note is there ...
        assert _overlaps(xlabels) == []  # ... and stays under its own panel
        titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
        assert _overlaps(titles) == []
    finally:
        plt.close(fig)


HISTORY = pd.DataFrame({"epoch": [1, 2, 3, 4, 5],
                        "train_loss": [0.9, 0.5, 0.4, 0.3, 0.2],
                        "validation_loss": [1.0, 0.8, 0.6, 0.6, 0.7],
                        "validation_nse": [0.2, 0.4, 0.6, 0.6, 0.5]})


def test_best_epoch_follows_the_trainers_rule() -> None:
    # the first epoch with the lowest validation loss, not the last or the best training loss
    assert best_epoch(HISTORY) == 3
    # an epoch without validation windows is judged by its training loss, as the trainer does
    no_validation = HISTORY.assign(validation_loss=[1.0, np.nan, np.nan, 0.35, 0.5])
    assert best_epoch(no_validation) == 4  # losses 1.0, 0.5, 0.4, 0.35, 0.5
    assert best_epoch(HISTORY.assign(validation_loss=[1.0, 0.8, 0.6, 0.6, np.inf])) == 5
    assert best_epoch(HISTORY.assign(train_loss=np.nan, validation_loss=np.nan)) is None
    assert best_epoch(HISTORY.iloc[:0]) is None


def test_training_figure_marks_the_epoch_whose_weights_are_used() -> None:
    fig = training_figure(HISTORY)
    try:
        for ax in fig.axes:
            marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [3, 3]]
            assert len(marks) == 1, [line.get_label() for line in ax.get_lines()]
            legend = [text.get_text() for text in ax.get_legend().get_texts()]
            assert "epoch 3: the weights used" in legend
    finally:
        plt.close(fig)


def test_negative_predictions_are_listed_per_catchment_and_model(cfg) -> None:
    done = _done([True] * 6 + [False] * 4)
    lines = negative_lines(done, cfg)
    text = "\n".join(lines)
    assert lines[0] == "## Negative predictions"
    assert "per model: hybrid 6, regional 6 (of 10)" in text
    listed = [line for line in lines if line.startswith("| g")]
    # the catchments with a count, most first; those without none are not listed
    assert [line.split(" | ")[0][2:] for line in listed] == \
        ["g02", "g05", "g08", "g01", "g04", "g07"]
    assert "| g02 | 2 | 2 |" in lines
    assert "No model predicted a negative" in "\n".join(
        negative_lines(done.assign(n_negative=0), cfg))
    assert "clipped at zero" in "\n".join(negative_lines(
        done.assign(n_negative=0), cfg.replace(clip_targets_to_zero=True)))
    # a model without a negative day keeps its column, with its zeros
    one = negative_lines(done.assign(n_negative=np.where(done.model == "hybrid", 0,
                                                          done.n_negative)), cfg)
    assert "per model: hybrid 0, regional 6 (of 10)" in "\n".join(one)
    assert "| g02 | 0 | 2 |" in one
    # a summary written before the column existed gets no section rather than a wrong one
    assert negative_lines(done.drop(columns="n_negative"), cfg) == []


def test_held_out_catchments_pick_the_epoch_and_are_drawn_beside_the_others() -> None:
    spatial = HISTORY.assign(spatial_validation_loss=[1.0, 0.7, 0.75, 0.8, 0.9],
                             spatial_validation_nse=[0.1, 0.3, 0.25, 0.2, 0.1])
    assert best_epoch(spatial) == 2  # the trainer stops on the held-out catchments
    fig = training_figure(spatial)
    try:
        left, right = fig.axes
        labels = [line.get_label() for line in right.get_lines()]
        assert "held-out catchments" in labels
        assert "training catchments' validation years" in labels
        assert any(list(line.get_xdata()) == [2, 2] for line in left.get_lines())
    finally:
        plt.close(fig)
