"""Checkpoints in the run's store: the model is only usable together with its scaler and split.

``checkpoints/final.pt`` holds the best weights, hyper-parameters, scaler, the catchment split and
the per-epoch history; ``checkpoints/epoch-NNN.pt`` hold everything needed to continue an
interrupted training from the end of that epoch. All of them load with
``torch.load(weights_only=True)``: tensors and plain data only, no pickled code.

A checkpoint with a flipped bit still loads (torch keeps no checksum of its tensors), so each one's
CRC-32 is recorded in ``checkpoints/_manifest.json`` as it is written (``hybrid.store.files``) and
compared before it is loaded: a damaged epoch checkpoint is dropped for the one before it, a
damaged ``final.pt`` is rebuilt from the epoch checkpoints by ``hybrid pretrain``. A model whose
weights are not all finite is never saved as final, exported, or loaded for encoding.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass
from typing import Any

import torch

from hybrid.data.windows import Scaler
from hybrid.encoder.ensemble import build_model
from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import StoreError
from hybrid.logs import logger
from hybrid.store import files, layout
from hybrid.store.provenance import sha256
from hybrid.store.storage import Store

log = logger()

_EPOCH = re.compile(r"epoch-(\d+)\.pt$")


def save_object(store: Store, key: str, obj: dict[str, Any]) -> str:
    """Write a checkpoint; returns its sha256 (the identity later stages record)."""
    data = object_bytes(obj)
    files.write(store, key, data)
    return sha256(data)


def object_bytes(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(_canonical(obj), buf)
    return buf.getvalue()


def _canonical(obj: Any) -> Any:
    """``obj`` with every string interned. Pickle shares a string it has seen *as an object*,
    so the same checkpoint saved from freshly trained state and from state read back from an
    epoch checkpoint would differ in bytes (and in sha256, the model's identity, so every
    partition made from it would be redone); interned, equal strings are one object in both."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):  # an OrderedDict state dict keeps its type and its _metadata
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def load_object(store: Store, key: str, data: bytes | None = None) -> dict[str, Any]:
    data = store.read_bytes(key) if data is None else data
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        reason = " ".join(str(err).split())[:160]
        raise StoreError(f"{store.uri(key)}: not a readable checkpoint ({reason})") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{store.uri(key)}: not a checkpoint of this package")
    reason = files.mismatch(store, key, data)  # a flipped bit in a tensor still loads
    if reason:
        raise StoreError(reason)
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
        raise StoreError(f"{err}: rerun `hybrid pretrain`, which deletes it and rebuilds it "
                         "from the epoch checkpoints") from None
    scaler = Scaler.from_dict(obj.get("scaler"))
    weights = ("members",) if "members" in obj else ("hparams", "state_dict")
    for name in (*weights, "split"):
        if name not in obj:
            raise StoreError(f"{store.uri(key)}: checkpoint is missing {name!r}")
    for weights in weights_of(obj):
        refuse_non_finite(weights, store.uri(key))
    model = build_model(obj, store.uri(key))
    model.to(device).eval()
    return TrainedModel(model, scaler, obj["split"], obj.get("best_epoch", -1),
                        obj.get("history", []), sha256(data), obj.get("config"))


def weights_of(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The state dicts a final checkpoint holds: one, or each ensemble member's."""
    if "members" in final:
        return [member.get("state_dict") or {} for member in final["members"]]
    return [final.get("state_dict") or {}]


def refuse_non_finite(state_dict: dict[str, Any], where: str) -> None:
    """A model with a NaN or infinite weight predicts NaN everywhere: refuse it in one line."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() \
                and not bool(torch.isfinite(tensor).all()):
            raise StoreError(f"{where}: weight {name!r} is not finite (NaN or infinite); the "
                             "training diverged: lower learning_rate or set clip_gradient_norm, "
                             "and train again under a new run_id")


def drop_damaged_final(store: Store, key: str = layout.FINAL) -> None:
    """Delete a final checkpoint that cannot be trusted (its hash differs from the one recorded,
    or it does not load), with one log line: pre-training then rebuilds it from the epoch
    checkpoints, to the same bytes."""
    if not store.exists(key):
        return
    try:
        load_object(store, key)
    except StoreError as err:
        log.info(f"pretrain: {err}; rebuilding it from the epoch checkpoints")
        store.delete(key)


def heal_history(store: Store, folder: str = layout.CHECKPOINTS) -> None:
    """Rewrite ``history.parquet`` from the final checkpoint when it is damaged or missing."""
    import pandas as pd

    from hybrid.store.storage import table_bytes

    key, final = f"{folder}/history.parquet", f"{folder}/final.pt"
    if not store.exists(final):
        return
    history = load_object(store, final).get("history") or []
    data = table_bytes(pd.DataFrame(history))
    files.write_if_changed(store, key, data, "pretrain")


def model_sha(store: Store, key: str = layout.FINAL) -> str:
    """The identity of the run's trained model: the sha256 of its final checkpoint, which every
    partition made from it carries, so features of another model are never trusted."""
    if not store.exists(key):
        raise StoreError(f"no trained model at {store.uri(key)}: run `hybrid pretrain` first")
    return sha256(store.read_bytes(key))
