"""Normalisation and sample windows, shared by training, encoding and the baselines.

Windows are never materialised: a catchment's normalised series is one (T x D) tensor, a sample is
the index of its window's last day, and a batch is gathered from a strided ``unfold`` view. That
keeps memory at O(T x D) instead of O(T x seq_length x D), a 365x difference.

Sample validity lives only here: a window whose inputs contain NaN, or whose target(s) are all
NaN, is not a sample.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
import torch

from hybrid.errors import DataError, StoreError


@dataclass
class Scaler:
    """Statistics from the training period of the training catchments only.

    Saved with the checkpoint: encoding or evaluating with statistics from other data would leak
    the test period into the features, and encoding without them is refused.
    """

    dynamic_inputs: list[str]
    static_attributes: list[str]
    target: str
    input_mean: list[float]
    input_std: list[float]
    static_mean: list[float]
    static_std: list[float]
    target_mean: float
    target_std: float

    #: what the statistics had to work around (a constant input), logged when training
    notes: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, frames: dict[str, pd.DataFrame], attributes: pd.DataFrame,
            dynamic_inputs: list[str], static_attributes: list[str], target: str,
            start: dt.date, end: dt.date) -> "Scaler":
        """Statistics over [start, end] of ``frames``; non-finite values count as missing.

        A variable with no finite value is an error naming it; a constant one is centred and
        left unscaled, and says so in ``notes``: nothing falls back silently.
        """
        period = [f.loc[pd.Timestamp(start):pd.Timestamp(end)] for f in frames.values()]
        values = np.array(pd.concat([p[dynamic_inputs + [target]] for p in period]),
                          dtype=np.float64)  # a copy: pandas' own arrays are read-only
        values[~np.isfinite(values)] = np.nan
        statics = np.array(attributes.loc[list(frames), static_attributes], dtype=np.float64)
        statics[~np.isfinite(statics)] = np.nan
        where = f"the training period ({start}..{end}) of the {len(frames)} training catchment(s)"
        notes: list[str] = []
        mean, std = _stats(values, dynamic_inputs + [target], "variable", where, notes)
        s_mean, s_std = _stats(statics, static_attributes, "static attribute",
                               f"the {len(frames)} training catchment(s)", notes)
        return cls(
            dynamic_inputs=list(dynamic_inputs), static_attributes=list(static_attributes),
            target=target, input_mean=mean[:-1], input_std=std[:-1], static_mean=s_mean,
            static_std=s_std, target_mean=mean[-1], target_std=std[-1], notes=notes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Scaler":
        if not data:
            raise StoreError("checkpoint has no scaler: it cannot encode or evaluate "
                             "(normalisation must come from the run that trained the model)")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check_inputs(self, dynamic_inputs: list[str], static_attributes: list[str]) -> None:
        """Refuse to apply a model to inputs it was not trained on."""
        if list(dynamic_inputs) != self.dynamic_inputs:
            raise StoreError(f"dynamic_inputs {list(dynamic_inputs)} differ from the "
                             f"checkpoint's {self.dynamic_inputs}")
        if list(static_attributes) != self.static_attributes:
            raise StoreError(f"static_attributes {list(static_attributes)} differ from the "
                             f"checkpoint's {self.static_attributes}")

    def inputs(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.dynamic_inputs].to_numpy(np.float32)
        return ((x - np.float32(self.input_mean)) / np.float32(self.input_std)).astype(np.float32)

    def statics(self, row: np.ndarray) -> np.ndarray:
        return ((np.asarray(row, np.float32) - np.float32(self.static_mean))
                / np.float32(self.static_std)).astype(np.float32)

    def target_values(self, frame: pd.DataFrame) -> np.ndarray:
        y = frame[self.target].to_numpy(np.float32)
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def denormalise(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float64) * self.target_std + self.target_mean


def _stats(values: np.ndarray, names: list[str], kind: str, where: str, notes: list[str]
           ) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for j, name in enumerate(names):
        column = values[:, j] if values.size else np.zeros(0)
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            raise DataError(f"{kind} {name!r} has no finite value in {where}: it cannot be "
                            "normalised; remove it from the config or fix the data")
        mean, std = float(finite.mean()), float(finite.std())
        if std <= 1e-8 * max(1.0, abs(mean)):
            # a constant input (e.g. no snow anywhere, or one catchment's attributes) must not
            # divide by zero; centring it keeps it harmless
            notes.append(f"{kind} {name!r} is constant ({mean:g}) over {where}: centred, "
                         "not scaled")
            std = 1.0
        means.append(mean)
        stds.append(std)
    return means, stds


def valid_window_ends(x: np.ndarray, seq_length: int) -> np.ndarray:
    """Boolean mask over days: True where the window ending that day has finite inputs only."""
    bad = ~np.isfinite(x).all(axis=1)
    count = np.concatenate([[0], np.cumsum(bad)])
    ends = np.arange(len(x))
    ok = ends >= seq_length - 1
    start = np.clip(ends - seq_length + 1, 0, None)
    ok &= (count[ends + 1] - count[start]) == 0
    return ok


def valid_targets(y: np.ndarray, predict_last_n: int) -> np.ndarray:
    """True where at least one of the last ``predict_last_n`` targets is observed."""
    finite = np.isfinite(y).astype(np.int64)
    count = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(len(y))
    start = np.clip(ends - predict_last_n + 1, 0, None)
    return (count[ends + 1] - count[start]) > 0


def period_mask(dates: pd.DatetimeIndex, start: dt.date, end: dt.date) -> np.ndarray:
    return np.asarray((dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end)))


@dataclass
class CatchmentArrays:
    """One catchment's normalised series, ready for windows."""

    gauge_id: str
    dates: pd.DatetimeIndex
    x: np.ndarray  # (T, D) float32, normalised inputs
    y: np.ndarray  # (T,) float32, normalised target (NaN where unobserved)
    static: np.ndarray  # (S,) float32, normalised attributes

    @classmethod
    def build(cls, gauge_id: str, frame: pd.DataFrame, static_row: np.ndarray,
              scaler: Scaler) -> "CatchmentArrays":
        return cls(gauge_id, pd.DatetimeIndex(frame.index), scaler.inputs(frame),
                   scaler.target_values(frame), scaler.statics(static_row))

    def sample_ends(self, seq_length: int, predict_last_n: int, start: dt.date,
                    end: dt.date) -> np.ndarray:
        """Indices of days that end a valid training sample inside [start, end]."""
        ok = valid_window_ends(self.x, seq_length) & valid_targets(self.y, predict_last_n)
        ok &= period_mask(self.dates, start, end)
        return np.flatnonzero(ok)


class WindowSampler:
    """All catchments' series concatenated once; batches are gathered from an ``unfold`` view.

    ``samples`` holds (global end index, catchment index) pairs; the window of a sample is the
    ``seq_length`` rows ending at its index, which never crosses a catchment boundary because
    validity requires ``seq_length - 1`` earlier days of the same catchment.
    """

    def __init__(self, catchments: list[CatchmentArrays], seq_length: int, predict_last_n: int,
                 start: dt.date, end: dt.date, stride: int = 1) -> None:
        """``stride`` > 1 keeps every ``stride``-th window end, counted back from each
        catchment's last one: with ``stride == predict_last_n`` the scored days of the windows
        tile the period once (how a sequence-to-sequence model is evaluated)."""
        self.seq_length, self.predict_last_n = seq_length, predict_last_n
        offsets = np.cumsum([0] + [len(c.x) for c in catchments])
        self.x = torch.from_numpy(np.concatenate([c.x for c in catchments]))
        self.y = torch.from_numpy(np.concatenate([c.y for c in catchments]))
        self.static = torch.from_numpy(np.stack([c.static for c in catchments])) \
            if catchments else torch.zeros(0, 0)
        ends, owners = [], []
        for i, c in enumerate(catchments):
            local = c.sample_ends(seq_length, predict_last_n, start, end)
            if stride > 1 and len(local):
                local = local[(local[-1] - local) % stride == 0]
            ends.append(local + offsets[i])
            owners.append(np.full(len(local), i))
        self.ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self.owners = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        # (T_total - L + 1, D, L) view: no copy; row s is the window starting at s
        self._x_windows = self.x.unfold(0, seq_length, 1)
        self._y_windows = self.y.unfold(0, predict_last_n, 1)

    def __len__(self) -> int:
        return len(self.ends)

    def batch(self, sample_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_d: B x L x D, x_s: B x S, y: B x n) for the given sample indices."""
        ends = torch.from_numpy(self.ends[sample_idx])
        x_d = self._x_windows[ends - self.seq_length + 1].transpose(1, 2)
        y = self._y_windows[ends - self.predict_last_n + 1]
        x_s = self.static[torch.from_numpy(self.owners[sample_idx])]
        return x_d, x_s, y
