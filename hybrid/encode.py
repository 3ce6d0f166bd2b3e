"""Encoding one catchment from the store into the store: the unit of work the actor serves."""

from __future__ import annotations

import time

from hybrid.checkpoints import TrainedModel
from hybrid.config import Config
from hybrid.encoding import MANIFEST, NoValidWindow, encode_catchment, encoded_key
from hybrid.prepare import load_attributes, load_catchment
from hybrid.storage import Store


class CatchmentEncoder:
    """Holds the trained model and the attribute table, so each request reads one partition."""

    def __init__(self, store: Store, cfg: Config, trained: TrainedModel, device: str) -> None:
        self.store, self.cfg, self.trained, self.device = store, cfg, trained, device
        self.attributes = load_attributes(store)
        trained.scaler.check_inputs(cfg.dynamic_inputs, cfg.static_attributes)

    def __call__(self, gauge_id: str, method: str | None = None, write: bool = True) -> dict:
        started = time.monotonic()
        frame = load_catchment(self.store, gauge_id)
        static = self.attributes.loc[gauge_id, self.trained.scaler.static_attributes].to_numpy()
        try:
            table = encode_catchment(self.trained, self.cfg, gauge_id, frame, static,
                                     method=method, device=self.device)
        except NoValidWindow as err:
            return {"gauge_id": gauge_id, "status": "skipped", "reason": str(err)}
        if write:
            self.store.write_table(encoded_key(gauge_id), table)
        return {"gauge_id": gauge_id, "status": "done", "rows": table.num_rows,
                "seconds": time.monotonic() - started}


def write_encoded_manifest(store: Store, cfg: Config, results: list[dict]) -> dict:
    manifest = {
        "stage": "encoded",
        "encoder": cfg.encoder,
        "hidden_size": cfg.hidden_size,  # the run's config fixed the checkpoint's size
        "catchments": sorted(r["gauge_id"] for r in results if r["status"] == "done"),
        "skipped": {r["gauge_id"]: r["reason"] for r in results if r["status"] == "skipped"},
        "schema": "date, split, observed, regional, h_0..h_{H-1} (float32)",
    }
    store.write_json(MANIFEST, manifest)
    return manifest
