"""Stage 3: the trained LSTM without its head turns each day into a feature vector.

Two encoders compute the hidden state at the end of each day's window:

* ``exact`` runs every ``seq_length`` window from a zero state, as the model was trained and as
  the paper does. Cost grows with days x seq_length.
* ``streaming`` runs once over the whole series, carrying the state, and reads the features off
  at each day. Cost grows with days only. Because the trained cell forgets, its states match the
  exact ones to float precision on most catchments (BENCHMARKS.md has the measurements).

Both mark the same days as valid (a full window of finite inputs), and streaming restarts from a
zero state after any gap in the inputs, so a NaN never leaks into later states.

Output schema of ``encoded/<id>/part-0.parquet`` (``hybrid.store.layout``):
``date`` (timestamp), ``split`` (train / validation / test), ``observed`` (target in its own units,
NaN where unobserved), ``regional`` (the LSTM head's prediction from exact windows, same units;
with the streaming encoder only on test days, NaN elsewhere), ``h_0`` .. ``h_{H-1}`` (float32
hidden state of the last LSTM layer, from the configured encoder).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from hybrid.config import ENCODERS, Config
from hybrid.data.catalog import load_attributes
from hybrid.data.windows import CatchmentArrays, period_mask, valid_window_ends
from hybrid.encoder.checkpoints import TrainedModel, load_trained
from hybrid.encoder.device import pick_device
from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import ConfigError, SkipCatchment
from hybrid.store.layout import feature_columns
from hybrid.store.storage import Store

SPLITS = ("train", "validation", "test")


@torch.no_grad()
def encode_exact(model: RegionalLSTM, arrays: CatchmentArrays, ends: np.ndarray,
                 seq_length: int, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Hidden state at each day in ``ends`` from its own window, started from zero."""
    model.eval()
    if len(ends) and int(np.min(ends)) < seq_length - 1:
        # a negative window start would silently wrap around to the end of the series
        raise ValueError(f"encode_exact: day {int(np.min(ends))} has no full window of "
                         f"{seq_length} days")
    x = torch.from_numpy(arrays.x)
    windows = x.unfold(0, seq_length, 1)  # view: (T - L + 1, D, L)
    x_s = torch.from_numpy(arrays.static).to(device)
    out = np.empty((len(ends), model.hidden_size), np.float32)
    for start in range(0, len(ends), batch_size):
        chunk = torch.from_numpy(ends[start:start + batch_size] - seq_length + 1)
        x_d = windows[chunk].transpose(1, 2).to(device)
        hidden, (h_n, _) = model.encode(x_d, x_s.expand(len(chunk), -1))
        out[start:start + len(chunk)] = h_n[-1].float().cpu().numpy()
    return out


@torch.no_grad()
def regional_head(model: RegionalLSTM, arrays: CatchmentArrays, days: np.ndarray,
                  seq_length: int, predict_last_n: int = 1, batch_size: int = 512,
                  device: str = "cpu") -> np.ndarray:
    """The regional LSTM's (standardised) prediction for each of ``days``, read the way the
    model was trained: the last ``predict_last_n`` steps of a ``seq_length`` window started
    from zero. Blocks of ``predict_last_n`` days tile ``days`` back from the last one, so a
    sequence-to-sequence model costs one window per block instead of one per day; a block
    whose window holds a gap falls back to one window per day. With ``predict_last_n == 1``
    this is the paper's many-to-one scoring, one window per day.
    """
    model.eval()
    n = max(1, int(predict_last_n))
    out = np.full(len(days), np.nan)
    if not len(days):
        return out
    valid = valid_window_ends(arrays.x, seq_length)
    block_end = days + (int(days.max()) - days) % n if n > 1 else days.copy()
    in_block = (block_end < len(valid)) & valid[np.minimum(block_end, len(valid) - 1)]
    single = ~in_block
    if in_block.any():
        ends = np.unique(block_end[in_block])
        windows = torch.from_numpy(arrays.x).unfold(0, seq_length, 1)
        x_s = torch.from_numpy(arrays.static).to(device)
        tails = np.empty((len(ends), n), np.float64)
        for start in range(0, len(ends), batch_size):
            chunk = torch.from_numpy(ends[start:start + batch_size] - seq_length + 1)
            x_d = windows[chunk].transpose(1, 2).to(device)
            y_hat = model(x_d, x_s.expand(len(chunk), -1))["y_hat"][:, -n:, 0]
            tails[start:start + len(chunk)] = y_hat.float().cpu().numpy()
        row = np.searchsorted(ends, block_end[in_block])
        out[in_block] = tails[row, n - 1 - (block_end[in_block] - days[in_block])]
    if single.any():
        hidden = encode_exact(model, arrays, days[single], seq_length, batch_size, device)
        out[single] = model.predict_hidden(torch.from_numpy(hidden).to(device))[:, 0] \
            .float().cpu().numpy()
    return out


@torch.no_grad()
def encode_streaming(model: RegionalLSTM, arrays: CatchmentArrays, ends: np.ndarray,
                     seq_length: int, chunk_days: int = 4096, device: str = "cpu"
                     ) -> np.ndarray:
    """Hidden state at each day in ``ends`` from one pass over each gap-free input segment."""
    model.eval()
    finite = np.isfinite(arrays.x).all(axis=1)
    states = np.full((len(arrays.x), model.hidden_size), np.nan, np.float32)
    x_s = torch.from_numpy(arrays.static).to(device).unsqueeze(0)
    # contiguous runs of finite inputs: [start, stop)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], finite.astype(np.int8), [0]])))
    # One sequence, step after step: on a CPU extra threads only add synchronisation (measured
    # 2-3x slower with 2 threads than with 1), so the pass runs single-threaded.
    with _cpu_threads(1) if device == "cpu" else contextlib.nullcontext():
        for seg_start, seg_stop in zip(edges[::2], edges[1::2]):
            state = None
            for lo in range(seg_start, seg_stop, chunk_days):
                hi = min(lo + chunk_days, seg_stop)
                x_d = torch.from_numpy(arrays.x[lo:hi]).to(device).unsqueeze(0)
                hidden, state = model.encode(x_d, x_s, state)
                states[lo:hi] = hidden[0].float().cpu().numpy()
    return states[ends]


@contextlib.contextmanager
def _cpu_threads(n: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


#: the function behind each of the config's ``encoder`` names (``hybrid.config.ENCODERS``)
ENCODE_FUNCTIONS = {"exact": encode_exact, "streaming": encode_streaming}


def encoded_days(cfg: Config, arrays: CatchmentArrays) -> tuple[np.ndarray, np.ndarray]:
    """(day indices, split labels) of every day with a valid window in some period."""
    ok = valid_window_ends(arrays.x, cfg.seq_length)
    labels = np.full(len(arrays.x), "", dtype=object)
    for name in reversed(SPLITS):  # on overlap, test wins over validation over train
        start, end = cfg.periods()[name]
        labels[(labels == "") & period_mask(arrays.dates, start, end)] = name
    keep = np.flatnonzero(ok & (labels != ""))
    return keep, labels[keep]


def encode_catchment(trained: TrainedModel, cfg: Config, gauge_id: str, frame: pd.DataFrame,
                     static_row: np.ndarray, method: str | None = None,
                     device: str = "cpu") -> pa.Table:
    """The encoded-features table of one catchment (see the module docstring for its schema)."""
    method = method or cfg.encoder
    if method not in ENCODERS:  # a caller's own ``method``; the config's is checked on load
        raise ConfigError(f"encoder: expected one of {list(ENCODERS)}, got {method!r}")
    trained.scaler.check_inputs(cfg.dynamic_inputs, cfg.static_attributes)
    arrays = CatchmentArrays.build(gauge_id, frame, static_row, trained.scaler)
    days, labels = encoded_days(cfg, arrays)
    if not (labels == "test").any():
        raise SkipCatchment(gauge_id, f"no day of the test period with {cfg.seq_length} days "
                                      "of finite inputs before it")
    options = {"batch_size": cfg.encode_batch_size} if method == "exact" else {}
    hidden = ENCODE_FUNCTIONS[method](trained.model, arrays, days, cfg.seq_length, device=device,
                              **options)
    # The regional baseline is scored as it was trained: from windows started from zero
    # (``regional_head``). With streaming features that costs a pass over the test days only,
    # where it is scored.
    scored = np.ones(len(days), bool) if method == "exact" else labels == "test"
    if method == "exact":
        with torch.no_grad():
            head = trained.model.predict_hidden(torch.from_numpy(hidden).to(device))[:, 0]
        head = head.float().cpu().numpy()
    else:
        head = regional_head(trained.model, arrays, days[scored], cfg.seq_length,
                             cfg.predict_last_n, cfg.encode_batch_size, device)
    regional = np.full(len(days), np.nan)
    regional[scored] = trained.scaler.denormalise(head)
    observed = frame[cfg.target].to_numpy(np.float64)[days]
    columns = {
        "date": pa.array(arrays.dates[days].values.astype("datetime64[ms]")),
        "split": pa.array(labels.astype(str)),
        "observed": pa.array(observed.astype(np.float32)),
        "regional": pa.array(regional.astype(np.float32)),
    }
    for i, name in enumerate(feature_columns(hidden.shape[1])):
        columns[name] = pa.array(hidden[:, i])
    return pa.table(columns)



def encoder_state(store: Store, cfg: Config, trained: TrainedModel | None = None) -> dict:
    """What a worker that encodes needs, built once: the model on this worker's device and the
    run's attribute table; inputs that differ from the model's are refused here, in one line."""
    device = pick_device(cfg.device)
    trained = trained or load_trained(store, device)
    trained.scaler.check_inputs(cfg.dynamic_inputs, cfg.static_attributes)
    return {"trained": trained, "device": device, "attributes": load_attributes(store)}
