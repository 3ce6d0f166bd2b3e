"""The paper's "catchment-wise" baseline: one LSTM per catchment, trained from scratch.

It is the cost the hybrid is meant to avoid, so it is optional; ``hybrid.cluster`` runs it as Ray
tasks on the same CPU nodes as the decoders. It reuses the regional training procedure with a
single catchment (no second training loop), and its test-period predictions join the decoders'
predictions files.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.decode import BASELINE_KEY
from hybrid.encoding import encode_catchment
from hybrid.prepare import load_attributes, load_catchment, partition_key
from hybrid.storage import Store
from hybrid.training import train_lstm


def catchment_wise_config(cfg: Config) -> Config:
    b = cfg.baselines
    return cfg.replace(hidden_size=b.catchment_wise_hidden_size, epochs=b.catchment_wise_epochs,
                       n_train_basins=1, num_threads=0)


def train_catchment_wise(store: Store, cfg: Config, gauge_id: str) -> dict:
    """Train one site-specific LSTM and write its test-period predictions."""
    started = time.monotonic()
    site_cfg = catchment_wise_config(cfg)
    out = store.child(f"baselines/catchment_wise/gauge_id={gauge_id}")
    trained = train_lstm(store, out, site_cfg, {"train": [gauge_id], "out_of_training": []},
                         device="cpu", quiet=True)
    frame = load_catchment(store, gauge_id)
    static = load_attributes(store).loc[gauge_id, cfg.static_attributes].to_numpy()
    table = encode_catchment(trained, site_cfg, gauge_id, frame, static).to_pandas()
    test = table[table["split"] == "test"]
    seconds = time.monotonic() - started
    predictions = pd.DataFrame({"date": test["date"].to_numpy(),
                                "catchment_wise": test["regional"].to_numpy(np.float32),
                                "train_seconds": np.full(len(test), seconds, np.float32)})
    store.write_table(partition_key(BASELINE_KEY, gauge_id), predictions)
    return {"gauge_id": gauge_id, "seconds": seconds}
