"""Pre-training of the regional LSTM: a plain function, which the Ray actor merely hosts.

Seeded end to end (catchment split, sample order, dropout) so that a run interrupted after epoch
k and resumed from its epoch checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch

from hybrid import checkpoints as ckpt
from hybrid.config import Config
from hybrid.errors import HybridError
from hybrid.model import RegionalLSTM
from hybrid.prepare import MANIFEST, load_attributes, load_catchment
from hybrid.progress import Progress, log
from hybrid.storage import Store
from hybrid.windows import CatchmentArrays, Scaler, WindowSampler


def pick_device(requested: str) -> str:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise HybridError("device: 'cuda' requested but torch sees no GPU")
        return "cuda"
    return "cpu"


def split_catchments(gauges: list[str], cfg: Config) -> dict[str, list[str]]:
    """Training catchments drawn by seed (paper: 371 of 421); the rest are "new locations"."""
    gauges = sorted(gauges)
    n = cfg.n_train_basins if cfg.n_train_basins is not None \
        else max(1, round(cfg.train_basin_fraction * len(gauges)))
    n = min(n, len(gauges))
    order = np.random.default_rng(cfg.seed).permutation(len(gauges))
    train = sorted(gauges[i] for i in order[:n])
    rest = sorted(gauges[i] for i in order[n:])
    return {"train": train, "out_of_training": rest}


def catchment_split(store: Store, cfg: Config) -> dict[str, list[str]]:
    """The split recorded in the run (drawn once, then read back by every later stage)."""
    if store.exists(ckpt.SPLIT):
        return store.read_json(ckpt.SPLIT)
    gauges = list(store.read_json(MANIFEST)["catchments"])
    split = split_catchments(gauges, cfg)
    store.write_json(ckpt.SPLIT, split)
    return split


def _arrays(gauges: list[str], scaler: Scaler, attributes: pd.DataFrame,
            frames: dict[str, pd.DataFrame]) -> list[CatchmentArrays]:
    return [CatchmentArrays.build(g, frames[g], attributes.loc[g, scaler.static_attributes]
                                  .to_numpy(), scaler) for g in gauges]


def hparams(cfg: Config, scaler: Scaler) -> dict:
    return {"n_dynamic": len(scaler.dynamic_inputs), "n_static": len(scaler.static_attributes),
            "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "output_dropout": cfg.output_dropout,
            "initial_forget_bias": cfg.initial_forget_bias}


def masked_mse(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mask = torch.isfinite(y)
    diff = torch.where(mask, y_hat - torch.nan_to_num(y), torch.zeros_like(y_hat))
    return (diff ** 2).sum() / mask.sum().clamp(min=1)


def evaluate_loss(model: RegionalLSTM, sampler: WindowSampler, idx: np.ndarray,
                  batch_size: int, device: str) -> float:
    model.eval()
    total, count = 0.0, 0
    n = sampler.predict_last_n
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            x_d, x_s, y = (t.to(device) for t in sampler.batch(idx[start:start + batch_size]))
            y_hat = model(x_d, x_s)["y_hat"][:, -n:, 0]
            mask = torch.isfinite(y)
            total += float(((y_hat - torch.nan_to_num(y))[mask] ** 2).sum())
            count += int(mask.sum())
    return total / max(count, 1)


def _stop_reason(state: dict, cfg: Config, budget: float, out_of_time: bool = False
                 ) -> str | None:
    """Why training ends after the epoch in ``state`` (also checked when resuming, so a run
    that crashed after its last epoch does not train one more)."""
    if state["bad_epochs"] >= cfg.patience:
        return f"early stopping: no improvement for {cfg.patience} epochs"
    if out_of_time or state["train_seconds"] > budget:
        return f"time budget of {cfg.max_train_minutes} minutes reached"
    return None


def train_regional(store: Store, cfg: Config, device: str | None = None) -> ckpt.TrainedModel:
    """Train (or resume, or just load) the regional LSTM of the run in ``store``."""
    return train_lstm(store, store, cfg, catchment_split(store, cfg), device, quiet=False)


def train_lstm(data: Store, store: Store, cfg: Config, split: dict[str, list[str]],
               device: str | None = None, quiet: bool = False) -> ckpt.TrainedModel:
    """Train an LSTM on ``split["train"]`` read from ``data``; checkpoints go to ``store``.

    The regional model and the catchment-wise baseline (one catchment in ``split["train"]``)
    are the same procedure with different catchments and sizes, so they share this function.
    """
    device = device or pick_device(cfg.device)
    say = (lambda *_: None) if quiet else log
    if store.exists(ckpt.FINAL):
        say(f"pretrain: final checkpoint exists at {store.uri(ckpt.FINAL)}; not retraining")
        return ckpt.load_trained(store, device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    attributes = load_attributes(data)
    frames = {g: load_catchment(data, g) for g in split["train"]}
    scaler = Scaler.fit(frames, attributes, cfg.dynamic_inputs, cfg.static_attributes,
                        cfg.target, cfg.train_start_date, cfg.train_end_date)
    arrays = _arrays(split["train"], scaler, attributes, frames)
    train = WindowSampler(arrays, cfg.seq_length, cfg.predict_last_n, cfg.train_start_date,
                          cfg.train_end_date)
    valid = WindowSampler(arrays, cfg.seq_length, cfg.predict_last_n,
                          cfg.validation_start_date, cfg.validation_end_date)
    if len(train) == 0:
        raise HybridError("pretrain: no valid training window in any training catchment "
                          f"between {cfg.train_start_date} and {cfg.train_end_date}")
    val_idx = np.arange(len(valid))
    if cfg.max_validation_samples and len(val_idx) > cfg.max_validation_samples:
        val_idx = np.sort(np.random.default_rng(cfg.seed).choice(
            len(val_idx), cfg.max_validation_samples, replace=False))

    torch.manual_seed(cfg.seed)
    model = RegionalLSTM.from_hparams(hparams(cfg, scaler)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=cfg.lr_patience)
    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "bad_epochs": 0,
             "history": [], "train_seconds": 0.0, "best_state": None}
    resume = ckpt.latest_epoch(store)
    if resume is not None:
        saved = ckpt.load_object(store, ckpt.epoch_key(resume))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        say(f"pretrain: resuming after epoch {resume} (best epoch {state['best_epoch']}, "
            f"validation loss {state['best_loss']:.4f})")
    say(f"pretrain: {len(split['train'])} training catchments, {len(train)} training and "
        f"{len(val_idx)} validation windows, hidden {cfg.hidden_size}, device {device}")

    budget = cfg.max_train_minutes * 60 if cfg.max_train_minutes else math.inf
    n_last = cfg.predict_last_n
    stop_reason = _stop_reason(state, cfg, budget) if resume is not None else None
    while stop_reason is None and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(train))
        if cfg.max_train_samples_per_epoch:
            order = order[:cfg.max_train_samples_per_epoch]
        torch.manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        started, losses, seen = time.monotonic(), [], 0
        n_batches = math.ceil(len(order) / cfg.batch_size)
        out_of_time = False
        with Progress(n_batches, f"pretrain epoch {epoch}/{cfg.epochs}", unit="batch",
                      quiet=quiet) as bar:
            for b in range(n_batches):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x_d, x_s, y = (t.to(device) for t in train.batch(idx))
                loss = masked_mse(model(x_d, x_s)["y_hat"][:, -n_last:, 0], y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_gradient_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_gradient_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
                seen += len(idx)
                bar.update(extra=f"loss={np.mean(losses[-50:]):.4f}")
                if state["train_seconds"] + time.monotonic() - started > budget:
                    out_of_time = True
                    break
        seconds = time.monotonic() - started
        state["train_seconds"] += seconds
        val_loss = evaluate_loss(model, valid, val_idx, max(cfg.batch_size, 1024), device) \
            if len(val_idx) else float(np.mean(losses))
        scheduler.step(val_loss)
        improved = val_loss < state["best_loss"]
        if improved:
            state.update(best_loss=val_loss, best_epoch=epoch, bad_epochs=0,
                         best_state=copy.deepcopy(model.state_dict()))
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append({
            "epoch": epoch, "train_loss": float(np.mean(losses)), "validation_loss": val_loss,
            "learning_rate": optimizer.param_groups[0]["lr"], "samples": seen,
            "seconds": seconds, "samples_per_second": seen / max(seconds, 1e-9)})
        say(f"pretrain: epoch {epoch} train loss {np.mean(losses):.4f}, validation loss "
            f"{val_loss:.4f}{' (best)' if improved else ''}, {seen / max(seconds, 1e-9):.0f} "
            "samples/s")
        ckpt.save_object(store, ckpt.epoch_key(epoch), {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "state": state})
        stop_reason = _stop_reason(state, cfg, budget, out_of_time)
    if stop_reason:
        say(f"pretrain: {stop_reason}")
    best_state = state["best_state"] or model.state_dict()
    model.load_state_dict(best_state)
    model.eval()
    final = {"hparams": hparams(cfg, scaler), "state_dict": best_state,
             "scaler": scaler.to_dict(), "split": split, "best_epoch": state["best_epoch"],
             "history": state["history"], "config": cfg.to_dict()}
    ckpt.save_object(store, ckpt.FINAL, final)
    store.write_table(ckpt.HISTORY, pd.DataFrame(state["history"]))
    say(f"pretrain: best epoch {state['best_epoch']} (validation loss "
        f"{state['best_loss']:.4f}); checkpoint at {store.uri(ckpt.FINAL)}")
    return ckpt.TrainedModel(model, scaler, split, state["best_epoch"], state["history"])
