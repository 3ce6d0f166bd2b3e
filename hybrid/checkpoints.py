"""Checkpoints in the run's store: the model is only usable together with its scaler and split.

``checkpoints/final.pt`` holds the best weights, hyper-parameters, scaler, the catchment split and
the per-epoch history; ``checkpoints/epoch-NNN.pt`` hold everything needed to continue an
interrupted training from the end of that epoch.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import torch

from hybrid.errors import StoreError
from hybrid.model import RegionalLSTM
from hybrid.storage import Store
from hybrid.windows import Scaler

FINAL = "checkpoints/final.pt"
SPLIT = "checkpoints/split.json"
HISTORY = "checkpoints/history.parquet"
_EPOCH = re.compile(r"epoch-(\d+)\.pt$")


def epoch_key(epoch: int) -> str:
    return f"checkpoints/epoch-{epoch:03d}.pt"


def save_object(store: Store, key: str, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    store.write_bytes(key, buf.getvalue())


def load_object(store: Store, key: str) -> dict[str, Any]:
    data = store.read_bytes(key)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise StoreError(f"{store.uri(key)}: not a readable checkpoint ({err})") from None


def latest_epoch(store: Store) -> int | None:
    epochs = [int(m.group(1)) for name in store.listdir("checkpoints")
              if (m := _EPOCH.search(name))]
    return max(epochs) if epochs else None


@dataclass
class TrainedModel:
    """What the encoder needs from pre-training."""

    model: RegionalLSTM
    scaler: Scaler
    split: dict[str, list[str]]
    best_epoch: int
    history: list[dict]

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size


def load_trained(store: Store, device: str = "cpu") -> TrainedModel:
    if not store.exists(FINAL):
        raise StoreError(f"no trained model at {store.uri(FINAL)}: run `hybrid pretrain` first")
    obj = load_object(store, FINAL)
    scaler = Scaler.from_dict(obj.get("scaler"))
    for key in ("hparams", "state_dict", "split"):
        if key not in obj:
            raise StoreError(f"{store.uri(FINAL)}: checkpoint is missing {key!r}")
    model = RegionalLSTM.from_hparams(obj["hparams"])
    model.load_state_dict(obj["state_dict"])
    model.to(device).eval()
    return TrainedModel(model, scaler, obj["split"], obj.get("best_epoch", -1),
                        obj.get("history", []))
