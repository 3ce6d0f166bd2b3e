"""Checkpoints in the run's store: the model is only usable together with its scaler and split.

``checkpoints/final.pt`` holds the best weights, hyper-parameters, scaler, the catchment split and
the per-epoch history; ``checkpoints/epoch-NNN.pt`` hold everything needed to continue an
interrupted training from the end of that epoch. All of them load with
``torch.load(weights_only=True)``: tensors and plain data only, no pickled code.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import torch

from hybrid.data.windows import Scaler
from hybrid.encoder.ensemble import build_model
from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import StoreError
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.provenance import sha256
from hybrid.store.storage import Store

log = logger()

_EPOCH = re.compile(r"epoch-(\d+)\.pt$")


def save_object(store: Store, key: str, obj: dict[str, Any]) -> str:
    """Write a checkpoint; returns its sha256 (the identity later stages record)."""
    data = object_bytes(obj)
    store.write_bytes(key, data)
    return sha256(data)


def object_bytes(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_object(store: Store, key: str, data: bytes | None = None) -> dict[str, Any]:
    data = store.read_bytes(key) if data is None else data
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        reason = " ".join(str(err).split())[:160]
        raise StoreError(f"{store.uri(key)}: not a readable checkpoint ({reason})") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{store.uri(key)}: not a checkpoint of this package")
    return obj


def epochs(store: Store, folder: str = layout.CHECKPOINTS) -> list[int]:
    return sorted(int(m.group(1)) for name in store.listdir(folder)
                  if (m := _EPOCH.search(name)))


def latest_epoch_state(store: Store, folder: str = layout.CHECKPOINTS
                       ) -> tuple[int, dict[str, Any]] | None:
    """The newest *readable* epoch checkpoint; a damaged one (an interrupted copy, a full disk)
    is deleted with a log line and the one before it is used."""
    for epoch in reversed(epochs(store, folder)):
        key = layout.epoch_key(epoch, folder)
        try:
            obj = load_object(store, key)
            if not {"model", "optimizer", "state"} <= set(obj):
                raise StoreError(f"{store.uri(key)}: an incomplete epoch checkpoint")
            return epoch, obj
        except StoreError as err:
            log.info(f"pretrain: {err}; deleting it and resuming from an earlier epoch")
            store.delete(key)
    return None


@dataclass
class TrainedModel:
    """What the encoder needs from pre-training."""

    model: RegionalLSTM
    scaler: Scaler
    split: dict[str, list[str]]
    best_epoch: int
    history: list[dict]
    #: sha256 of the final checkpoint file: the identity of "this model" in later stages
    sha256: str = ""
    #: the training settings recorded with it (seq_length, predict_last_n, inputs)
    config: dict | None = None

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size


def load_trained(store: Store, device: str = "cpu", key: str = layout.FINAL) -> TrainedModel:
    if not store.exists(key):
        raise StoreError(f"no trained model at {store.uri(key)}: run `hybrid pretrain` first")
    data = store.read_bytes(key)
    try:
        obj = load_object(store, key, data)
    except StoreError as err:
        raise StoreError(f"{err}: delete it and rerun `hybrid pretrain` to rebuild it from the "
                         "epoch checkpoints") from None
    scaler = Scaler.from_dict(obj.get("scaler"))
    weights = ("members",) if "members" in obj else ("hparams", "state_dict")
    for name in (*weights, "split"):
        if name not in obj:
            raise StoreError(f"{store.uri(key)}: checkpoint is missing {name!r}")
    model = build_model(obj, store.uri(key))
    model.to(device).eval()
    return TrainedModel(model, scaler, obj["split"], obj.get("best_epoch", -1),
                        obj.get("history", []), sha256(data), obj.get("config"))


def model_sha(store: Store, key: str = layout.FINAL) -> str:
    """The identity of the run's trained model: the sha256 of its final checkpoint, which every
    partition made from it carries, so features of another model are never trusted."""
    if not store.exists(key):
        raise StoreError(f"no trained model at {store.uri(key)}: run `hybrid pretrain` first")
    return sha256(store.read_bytes(key))
