"""One catchment's decoder: fitted on its encoded days, kept for ``hybrid predict``.

Plain arrays in and out, so the same code serves the decode stage, ``predict`` and the
benchmarks; which regressor is fitted is ``hybrid.decoder.regressors``' business.

Kept forests are ``skops.io`` files, never pickles: a pickle runs whatever code it names when it
is loaded, so anyone able to write to the store could run code on every machine that predicts.
``skops.io`` loads only the types on an explicit list (scikit-learn's estimators, numpy arrays,
and the two tree classes below) and refuses anything else before building any object. A hash
in the manifest would not do: whoever can plant a forest can rewrite the manifest too. Forests
kept as ``model.joblib`` by earlier versions are refused, not loaded (refit them: see below).
"""

from __future__ import annotations

import time
import zipfile
from typing import Any

import numpy as np

from hybrid.config import Config
from hybrid.decoder.regressors import make_decoder
from hybrid.errors import StoreError
from hybrid.store import layout
from hybrid.store.storage import Store, content_hash


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


#: the types a kept forest may hold beyond those skops trusts by default (scikit-learn
#: estimators, numpy): the compiled tree classes of the decoders in ``regressors``
TRUSTED_TYPES = ["sklearn.tree._tree.Tree",
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def save_decoder(store: Store, gauge_id: str, model: Any) -> str:
    """Keep a fitted forest; returns its content hash (recorded with its predictions)."""
    import skops.io as sio

    data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED)
    store.write_bytes(layout.decoder_key(gauge_id), data)
    return content_hash(data)


def load_decoder(store: Store, gauge_id: str, expected_hash: str | None = None) -> Any:
    """A kept forest, loaded without running any code it names; one line when it cannot be."""
    import skops.io as sio

    key = layout.decoder_key(gauge_id)
    if not store.exists(key):
        legacy = layout.legacy_decoder_key(gauge_id)
        if store.exists(legacy):
            raise StoreError(
                f"{store.uri(legacy)}: forests kept as pickles are not loaded (loading a pickle "
                "runs the code it names); refit them: delete the run's predictions/ and "
                "decoders/ folders and rerun `hybrid decode` (seeded: the same forests)")
        raise StoreError(f"{store.uri(key)} not found: this run's forests were not kept "
                         "(decoder.keep_models: false); rerun with keep_models: true under a new "
                         "run_id to predict other periods")
    data = store.read_bytes(key)
    if expected_hash and content_hash(data) != expected_hash:
        raise StoreError(f"{store.uri(key)}: its content hash is {content_hash(data)}, not the "
                         f"{expected_hash} recorded with its predictions (damaged or replaced); "
                         "refit it: delete its predictions partition and rerun `hybrid decode`")
    try:
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
        if untrusted:
            raise StoreError(f"{store.uri(key)}: holds the type {untrusted[0]!r}, which a kept "
                             "forest never holds; it was not loaded (refit it with `hybrid "
                             "decode`)")
        return sio.loads(data, trusted=TRUSTED_TYPES)
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001 - an empty, cut or foreign file: one line
        text = " ".join(str(err).split())[:160] or type(err).__name__
        raise StoreError(f"{store.uri(key)}: not a readable forest ({type(err).__name__}: "
                         f"{text}); refit it: delete its predictions partition and rerun "
                         "`hybrid decode`") from None
