"""One catchment's decoder: fitted on its encoded days, kept for ``hybrid predict``.

Plain arrays in and out, so the same code serves the decode stage, ``predict`` and the
benchmarks; which regressor is fitted is ``hybrid.decoder.regressors``' business.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from hybrid.config import Config
from hybrid.decoder.regressors import make_decoder
from hybrid.errors import StoreError
from hybrid.store import layout
from hybrid.store.storage import Store


def fit_predict(features: np.ndarray, target: np.ndarray, test_features: np.ndarray,
                cfg: Config, n_jobs: int) -> tuple[np.ndarray, Any, float]:
    """Fit the configured decoder on rows with an observed target; predict the test rows."""
    observed = np.isfinite(target)
    if observed.sum() < 2:
        raise ValueError(f"only {int(observed.sum())} observed training days")
    model = make_decoder(cfg.decoder.name, cfg.decoder.params, n_jobs=n_jobs, seed=cfg.seed)
    started = time.monotonic()
    model.fit(features[observed], target[observed])
    seconds = time.monotonic() - started
    return model.predict(test_features).astype(np.float32), model, seconds


def save_decoder(store: Store, gauge_id: str, model: Any) -> None:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    store.write_bytes(layout.decoder_key(gauge_id), buf.getvalue())


def load_decoder(store: Store, gauge_id: str) -> Any:
    import joblib

    key = layout.decoder_key(gauge_id)
    if not store.exists(key):
        raise StoreError(f"{store.uri(key)} not found: this run's forests were not kept "
                         "(decoder.keep_models: false); rerun with keep_models: true under a new "
                         "run_id to predict other periods")
    return joblib.load(io.BytesIO(store.read_bytes(key)))
