"""Training an LSTM: a plain function, which the Ray actor merely hosts.

``Trainer`` is the procedure in named steps, as NeuralHydrology's ``BaseTrainer`` has them:
restore the state of an interrupted run, train one epoch, validate, save a checkpoint, and
finish with the best weights. One masked loss object is used for training and validation, so
the number that picks the best epoch is the number that was minimised.

The same trainer makes the regional model (many catchments), the catchment-wise baseline (one
catchment, from scratch) and the fine-tuned baseline (one catchment, from the regional weights
and scaler). It is seeded end to end (catchment split, sample order, dropout) so that a run
interrupted after epoch k and resumed from its epoch checkpoint ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hybrid.config import Config
from hybrid.data.catalog import catchment_split, load_attributes, load_catchment
from hybrid.data.windows import CatchmentArrays, Scaler, WindowSampler
from hybrid.encoder import checkpoints as ckpt
from hybrid.encoder.device import pick_device
from hybrid.encoder.ensemble import EnsembleLSTM, weights_entry
from hybrid.encoder.losses import MaskedMSE, make_loss
from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import HybridError
from hybrid.evaluation.metrics import nse
from hybrid.logs import logger
from hybrid.progress import Progress
from hybrid.store import files, layout
from hybrid.store.runs import without_secrets
from hybrid.store.storage import Store, table_bytes

log = logger()


def hparams(cfg: Config, scaler: Scaler) -> dict:
    return {"n_dynamic": len(scaler.dynamic_inputs), "n_static": len(scaler.static_attributes),
            "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "output_dropout": cfg.output_dropout,
            "initial_forget_bias": cfg.initial_forget_bias}


@dataclass
class TrainState:
    """Everything an epoch checkpoint must hold besides the weights and the optimiser."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0
    history: list | None = None
    best_state: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Trainer:
    """Trains on ``split["train"]`` read from ``data``; checkpoints go to ``out``."""

    def __init__(self, data: Store, out: Store, cfg: Config, split: dict[str, list[str]],
                 device: str | None = None, quiet: bool = False,
                 init: ckpt.TrainedModel | None = None,
                 checkpoint_folder: str = layout.CHECKPOINTS) -> None:
        self.data, self.out, self.cfg, self.split = data, out, cfg, split
        self.device = device or pick_device(cfg.device)
        self.say = (lambda *_: None) if quiet else log.info
        self.quiet = quiet
        self.folder = checkpoint_folder
        self.fine_tuning = init is not None
        self.budget = cfg.max_train_minutes * 60 if cfg.max_train_minutes else math.inf
        self.state = TrainState(history=[])
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.initialize_training(init)

    def initialize_training(self, init: ckpt.TrainedModel | None) -> None:
        """The set-up in named steps, each one a hook a variant of the trainer may override."""
        arrays = self._get_data(init)
        self.loss = self._get_loss(arrays)
        self.model = self._get_model(init)
        self.optimizer = self._get_optimizer()
        self.scheduler = self._get_scheduler()

    def _get_data(self, init: ckpt.TrainedModel | None) -> list[CatchmentArrays]:
        """The scaler (fitted here, or kept from the model being fine-tuned) and the windows:
        training windows, temporal validation windows of the training catchments, and spatial
        validation windows of the held-out catchments (``validation_basin_fraction``)."""
        cfg, split = self.cfg, self.split
        holdout = list(split.get("validation") or [])
        frames = self._read_frames([*split["train"], *holdout])
        if init is not None:  # fine-tuning keeps the regional model's normalisation
            self.scaler = init.scaler
        else:  # from the training catchments alone: the held-out ones stay unseen
            self.scaler = Scaler.fit({g: frames[g] for g in split["train"]}, self.attributes,
                                     cfg.dynamic_inputs, cfg.static_attributes, cfg.target,
                                     cfg.train_start_date, cfg.train_end_date)
            for note in self.scaler.notes:
                self.say(f"pretrain: {note}")
        arrays = self._arrays(frames, split["train"])
        #: the gauge id behind each ``owners`` index of the training windows
        self.train_windows_ids = [a.gauge_id for a in arrays]
        self.train_windows = WindowSampler(arrays, cfg.seq_length, cfg.predict_last_n,
                                           cfg.train_start_date, cfg.train_end_date)
        if len(self.train_windows) == 0:
            raise HybridError("pretrain: no valid training window in any training catchment "
                              f"between {cfg.train_start_date} and {cfg.train_end_date}")
        self.valid_windows, self.val_idx = self._validation_windows(arrays)
        self.spatial_arrays = self._arrays(frames, holdout)
        self.spatial_windows, self.spatial_idx = self._validation_windows(self.spatial_arrays)
        return arrays

    def _read_frames(self, gauges: list[str]) -> dict:
        self.attributes = load_attributes(self.data)
        # the store's latency, not the CPU, bounds reading hundreds of partitions: overlap it
        with ThreadPoolExecutor(min(16, max(1, len(gauges)))) as pool:
            return dict(zip(gauges, pool.map(lambda g: load_catchment(self.data, g), gauges)))

    def _arrays(self, frames: dict, gauges: list[str]) -> list[CatchmentArrays]:
        return [CatchmentArrays.build(g, frames[g], self.attributes.loc[
            g, self.scaler.static_attributes].to_numpy(), self.scaler) for g in gauges]

    def _validation_windows(self, arrays: list[CatchmentArrays]
                            ) -> tuple[WindowSampler | None, np.ndarray]:
        """Windows tiling each catchment's validation period once (stride n), so the
        per-catchment NSE covers whole years whatever predict_last_n is; a seeded subset of
        whole catchments when ``max_validation_samples`` bounds them."""
        if not arrays:
            return None, np.arange(0)
        cfg = self.cfg
        windows = WindowSampler(arrays, cfg.seq_length, cfg.predict_last_n,
                                cfg.validation_start_date, cfg.validation_end_date,
                                stride=cfg.predict_last_n)
        return windows, _validation_subset(windows, cfg.max_validation_samples, cfg.seed)

    def _get_loss(self, arrays: list[CatchmentArrays]) -> MaskedMSE:
        # the held-out catchments are weighed by their own spread (NSE*), as training ones are
        self.spatial_loss = make_loss(self.cfg, self.spatial_arrays)
        return make_loss(self.cfg, arrays)

    def _get_model(self, init: ckpt.TrainedModel | None) -> RegionalLSTM:
        torch.manual_seed(self.cfg.seed)
        if init is not None and isinstance(init.model, EnsembleLSTM):
            return copy.deepcopy(init.model).to(self.device)  # fine-tuned as one model
        model = RegionalLSTM.from_hparams(hparams(self.cfg, self.scaler)).to(self.device)
        if init is not None:
            model.load_state_dict(init.model.state_dict())
        return model

    def _get_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.learning_rate,
                                weight_decay=self.cfg.weight_decay)

    def _perturb(self, x_d: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian noise on the normalised inputs and targets of a training batch (never on
        validation): regularisers against a validation curve that flattens early. The epoch's
        seed draws it, so a resumed training draws the same noise."""
        if self.cfg.input_noise_std:
            x_d = x_d + torch.randn_like(x_d) * self.cfg.input_noise_std
        if self.cfg.target_noise_std:
            y = y + torch.randn_like(y) * self.cfg.target_noise_std  # a missing day stays NaN
        return x_d, y

    def _get_scheduler(self):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=self.cfg.lr_patience)

    # ----------------------------------------------------------------------- the steps
    def restore(self) -> bool:
        """Continue from the newest readable epoch checkpoint, if there is one."""
        found = ckpt.latest_epoch_state(self.out, self.folder)
        if found is None:
            return False
        epoch, saved = found
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState.from_dict(saved["state"])
        self.say(f"pretrain: resuming after epoch {epoch} (best epoch {self.state.best_epoch}, "
                 f"{self.best_text()})")
        return True

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the epoch's sample draw; stops early when the time budget runs out."""
        cfg = self.cfg
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.train_windows))
        if cfg.max_train_samples_per_epoch:
            order = order[:cfg.max_train_samples_per_epoch]
        torch.manual_seed(cfg.seed * 1000 + epoch)
        self.model.train()
        started, losses, seen, out_of_time = time.monotonic(), [], 0, False
        cpu_started = time.process_time()
        n_batches = math.ceil(len(order) / cfg.batch_size)
        n_last = cfg.predict_last_n
        with Progress(n_batches, f"pretrain epoch {epoch}/{cfg.epochs}", unit="batch",
                      quiet=self.quiet, count_failures=False) as bar:
            for b in range(n_batches):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x_d, x_s, y = (t.to(self.device) for t in self.train_windows.batch(idx))
                x_d, y = self._perturb(x_d, y)
                owners = torch.from_numpy(self.train_windows.owners[idx]).to(self.device)
                with self._autocast():
                    y_hat = self.model(x_d, x_s)["y_hat"][:, -n_last:, 0]
                loss = self.loss.mean(y_hat.float(), y, owners)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_gradient_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   cfg.clip_gradient_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
                if not math.isfinite(losses[-1]):
                    raise self._diverged(epoch, losses[-1])
                seen += len(idx)
                bar.update(extra=f"loss={np.mean(losses[-50:]):.4f}")
                if self.state.train_seconds + time.monotonic() - started > self.budget:
                    out_of_time = True
                    break
        seconds = time.monotonic() - started
        self.state.train_seconds += seconds
        return {"epoch": epoch, "train_loss": float(np.mean(losses)), "samples": seen,
                "seconds": seconds, "cpu_seconds": time.process_time() - cpu_started,
                "samples_per_second": seen / max(seconds, 1e-9),
                "target_days_per_second": seen * cfg.predict_last_n / max(seconds, 1e-9),
                "out_of_time": out_of_time}

    def _diverged(self, epoch: int, loss: float) -> HybridError:
        """Training that produced a non-finite loss stops: its weights are garbage from here on,
        and a NaN model must never become "best epoch" and have its metrics published."""
        cfg = self.cfg
        return HybridError(
            f"pretrain: the training loss became {loss} in epoch {epoch}; the training "
            f"diverged: lower learning_rate (now {cfg.learning_rate}) or set "
            f"clip_gradient_norm (now {cfg.clip_gradient_norm}), under a new run_id")

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss and median NSE over the fixed validation windows: of the training
        catchments (temporal: ``validation_*``) and, with ``validation_basin_fraction``, of the
        held-out catchments (spatial: ``spatial_validation_*``), which then pick the best epoch.
        NSE is taken in normalised units: it is unchanged by an affine rescaling of obs and sim
        alike."""
        self.model.eval()
        row = dict(zip(("validation_loss", "validation_nse"),
                       self._evaluate(self.valid_windows, self.val_idx, self.loss)))
        if self.spatial_windows is not None:
            row.update(zip(("spatial_validation_loss", "spatial_validation_nse"),
                           self._evaluate(self.spatial_windows, self.spatial_idx,
                                          self.spatial_loss)))
        return row

    @property
    def stopping_key(self) -> str:
        """The validation score that picks the best epoch and stops training."""
        prefix = "spatial_" if self.spatial_windows is not None else ""
        return f"{prefix}validation_{'nse' if self.cfg.stopping_metric == 'median_nse' else 'loss'}"

    def best_text(self) -> str:
        if self.cfg.stopping_metric == "median_nse":
            return f"{self.stopping_key.replace('_', ' ')} {-self.state.best_loss:.4f}"
        return f"validation loss {self.state.best_loss:.4f}"

    def monitored(self, row: dict) -> float:
        """The number training minimises: the validation loss, or minus the median NSE."""
        value = row[self.stopping_key]
        return -value if self.cfg.stopping_metric == "median_nse" else value

    def _evaluate(self, windows: WindowSampler | None, indices: np.ndarray, loss_fn: MaskedMSE
                  ) -> tuple[float, float]:
        if windows is None or not len(indices):
            return math.nan, math.nan
        n = self.cfg.predict_last_n
        total, count = 0.0, 0
        owners, sims, obs = [], [], []
        batch = max(self.cfg.batch_size, 1024)
        for start in range(0, len(indices), batch):
            idx = indices[start:start + batch]
            x_d, x_s, y = (t.to(self.device) for t in windows.batch(idx))
            y_hat = self.model(x_d, x_s)["y_hat"][:, -n:, 0]
            owners_idx = torch.from_numpy(windows.owners[idx]).to(self.device)
            part_sum, part_count = loss_fn(y_hat, y, owners_idx)
            total += float(part_sum)
            count += int(part_count)
            owners.append(np.repeat(windows.owners[idx], n))
            sims.append(y_hat.float().cpu().numpy().reshape(-1))
            obs.append(y.float().cpu().numpy().reshape(-1))
        owner, sim, ob = (np.concatenate(a) for a in (owners, sims, obs))
        scores = [nse(ob[owner == i], sim[owner == i]) for i in np.unique(owner)]
        finite = [s for s in scores if np.isfinite(s)]
        return total / max(count, 1), float(np.median(finite)) if finite else math.nan

    def save_epoch(self, epoch: int) -> None:
        ckpt.save_object(self.out, layout.epoch_key(epoch, self.folder), {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "state": self.state.to_dict()})

    def stop_reason(self, out_of_time: bool = False) -> str | None:
        """Why training ends after the current epoch (also checked when resuming, so a run
        that crashed after its last epoch does not train one more)."""
        if self.state.bad_epochs >= self.cfg.patience:
            return f"early stopping: no improvement for {self.cfg.patience} epochs"
        if out_of_time or self.state.train_seconds > self.budget:
            return f"time budget of {self.cfg.max_train_minutes} minutes reached"
        if self.state.epoch >= self.cfg.epochs:
            return f"all {self.cfg.epochs} epochs done"
        return None

    def finish(self, final_key: str) -> ckpt.TrainedModel:
        """Keep the best epoch's weights and write the final checkpoint and the history."""
        best = self.state.best_state or self.model.state_dict()
        ckpt.refuse_non_finite(best, self.out.uri(final_key))
        self.model.load_state_dict(best)
        self.model.eval()
        weights = {"hparams": hparams(self.cfg, self.scaler), "state_dict": best} \
            if isinstance(self.model, RegionalLSTM) else weights_entry(self.model, best)
        final = {**weights, "scaler": self.scaler.to_dict(), "split": self.split,
                 "best_epoch": self.state.best_epoch, "history": self.state.history,
                 "config": without_secrets(self.cfg.to_dict())}  # checkpoints travel
        digest = ckpt.save_object(self.out, final_key, final)
        history_key = final_key.rsplit("/", 1)[0] + "/history.parquet"
        files.write(self.out, history_key, table_bytes(pd.DataFrame(self.state.history)))
        return ckpt.TrainedModel(self.model, self.scaler, self.split, self.state.best_epoch,
                                 self.state.history, digest, self.cfg.to_dict())

    # ----------------------------------------------------------------------- the loop
    def train(self, final_key: str = layout.FINAL) -> ckpt.TrainedModel:
        resumed = self.restore()
        cfg = self.cfg
        held_out = len(self.split.get("validation") or [])
        self.say(f"pretrain: {len(self.split['train'])} training catchment(s), "
                 f"{len(self.train_windows)} training and {len(self.val_idx)} validation "
                 "windows" + (f", {held_out} catchment(s) held out for spatial validation "
                              f"({len(self.spatial_idx)} windows)" if held_out else "")
                 + f", hidden {cfg.hidden_size}, device {self.device}")
        reason = self.stop_reason() if resumed else None
        if self.fine_tuning and not resumed:
            # fine-tuning must beat where it starts: the unchanged model is "epoch 0"
            start = self.monitored(self.validate())
            if np.isfinite(start):
                self.state.best_loss, self.state.best_epoch = start, 0
                self.state.best_state = copy.deepcopy(self.model.state_dict())
        while reason is None:
            epoch = self.state.epoch + 1
            row = self.train_epoch(epoch)
            row.update(self.validate())
            loss = self.monitored(row)
            if not np.isfinite(loss):
                loss = row["train_loss"]  # no validation window: fall back, and say so below
            self.scheduler.step(loss)
            improved = loss < self.state.best_loss
            if improved:
                self.state.best_loss, self.state.best_epoch = loss, epoch
                self.state.bad_epochs = 0
                self.state.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.state.bad_epochs += 1
            self.state.epoch = epoch
            row["learning_rate"] = self.optimizer.param_groups[0]["lr"]
            out_of_time = row.pop("out_of_time")
            self.state.history.append(row)
            self.say(f"pretrain: epoch {epoch} train loss {row['train_loss']:.4f}, "
                     f"{_describe_validation(row)}"
                     f"{' (best)' if improved else ''}, {row['samples_per_second']:.0f} "
                     "samples/s")
            self.save_epoch(epoch)
            reason = self.stop_reason(out_of_time)
        self.say(f"pretrain: {reason}")
        trained = self.finish(final_key)
        self.say(f"pretrain: best epoch {self.state.best_epoch} ({self.best_text()}); "
                 f"checkpoint at {self.out.uri(final_key)}")
        return trained


def _describe_validation(row: dict) -> str:
    if not np.isfinite(row["validation_loss"]):
        return "no validation window: best epoch by training loss"
    text = (f"validation loss {row['validation_loss']:.4f}, median NSE "
            f"{row['validation_nse']:.3f}")
    if "spatial_validation_loss" in row:
        text += (f"; held-out catchments: loss {row['spatial_validation_loss']:.4f}, median NSE "
                 f"{row['spatial_validation_nse']:.3f}")
    return text


def _validation_subset(windows: WindowSampler, budget: int | None, seed: int) -> np.ndarray:
    """Indices of the validation windows of a seeded subset of catchments, as many whole
    catchments as fit in ``budget`` windows (all of them without a budget)."""
    if not budget or len(windows) <= budget:
        return np.arange(len(windows))
    order = np.random.default_rng(seed).permutation(int(windows.owners.max()) + 1)
    counts = np.bincount(windows.owners, minlength=len(order))
    keep, total = [], 0
    for owner in order:
        if total and total + counts[owner] > budget:
            break
        keep.append(owner)
        total += counts[owner]
    return np.flatnonzero(np.isin(windows.owners, keep))


def train_regional(store: Store, cfg: Config, device: str | None = None) -> ckpt.TrainedModel:
    """Train (or resume, or just load) the regional LSTM of the run in ``store``."""
    device = device or pick_device(cfg.device)
    ckpt.drop_damaged_final(store)
    if store.exists(layout.FINAL):
        log.info(f"pretrain: final checkpoint exists at {store.uri(layout.FINAL)}; not "
                 "retraining")
        return ckpt.load_trained(store, device)
    return Trainer(store, store, cfg, catchment_split(store, cfg), device).train()
