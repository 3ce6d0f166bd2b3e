"""The prepared run as every later stage reads it: catchment tables, attributes, the split.

Stages read catchments through these functions and never through a dataset's own files, so a
dataset's quirks are dealt with once, in ``prepare``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.errors import ConfigError, StoreError
from hybrid.store import layout, partitions
from hybrid.store.storage import Store


def load_catchment(store: Store, gauge_id: str) -> pd.DataFrame:
    """One canonical catchment table, indexed by date."""
    table = partitions.read_partition(store, layout.CATCHMENTS, gauge_id)
    return table.to_pandas().set_index("date")


def load_attributes(store: Store) -> pd.DataFrame:
    return store.read_frame(layout.ATTRIBUTES).set_index(layout.PARTITION_KEY)


def usable_catchments(store: Store) -> list[str]:
    """The prepared catchments, as the manifest lists them (ids checked)."""
    manifest = partitions.require_manifest(store, layout.CATCHMENTS, "prepare")
    return sorted(manifest["catchments"])


def check_train_count(cfg: Config, available: int) -> None:
    """Refuse more training catchments than there are (said the same way wherever counted)."""
    if cfg.n_train_basins is not None and cfg.n_train_basins > available:
        raise ConfigError(f"n_train_basins: {cfg.n_train_basins} training catchments asked for, "
                          f"but the run has only {available} usable catchment(s)")


def split_catchments(gauges: list[str], cfg: Config) -> dict[str, list[str]]:
    """Training catchments drawn by seed (paper: 371 of 421); the rest are "new locations".

    With ``validation_basin_fraction`` a share of the training pool is held out of the gradient
    steps (``validation``) for early stopping; those count as out of training everywhere else.
    """
    gauges = sorted(gauges)
    n = cfg.n_train_basins if cfg.n_train_basins is not None \
        else max(1, round(cfg.train_basin_fraction * len(gauges)))
    check_train_count(cfg, len(gauges))
    seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    order = np.random.default_rng(seed).permutation(len(gauges))
    pool = [gauges[i] for i in order[:n]]
    rest = sorted(gauges[i] for i in order[n:])
    if not cfg.validation_basin_fraction:
        return {"train": sorted(pool), "out_of_training": rest}
    # held out of the gradient steps, from the training pool, by its own seeded draw: the
    # catchments that judge the encoder for the use it exists for, places it never saw
    k = max(1, round(cfg.validation_basin_fraction * len(pool)))
    if k >= len(pool):
        raise ConfigError(f"validation_basin_fraction: {cfg.validation_basin_fraction} of "
                          f"{len(pool)} training catchments leaves none to train on")
    held = np.random.default_rng([seed, 1]).permutation(len(pool))[:k]
    validation = sorted(pool[i] for i in held)
    return {"train": sorted(set(pool) - set(validation)), "validation": validation,
            "out_of_training": rest}


def catchment_split(store: Store, cfg: Config) -> dict[str, list[str]]:
    """The split recorded in the run (drawn once, then read back by every later stage)."""
    if store.exists(layout.SPLIT):
        split = store.read_json(layout.SPLIT)
        try:
            for part in ("train", "out_of_training", "validation"):
                for gauge_id in split.get(part, []) if part == "validation" else split[part]:
                    layout.check_gauge_id(gauge_id, store.uri(layout.SPLIT))
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{store.uri(layout.SPLIT)} is damaged ({err}); delete the run "
                             "folder's checkpoints to draw the split again") from None
        # in the order it was drawn (the final checkpoint rebuilt from it has the same bytes),
        # held-out catchments included: a resumed training keeps validating on them
        return {part: split[part] for part in ("train", "validation", "out_of_training")
                if part in split}
    split = split_catchments(usable_catchments(store), cfg)
    store.write_json(layout.SPLIT, split)
    return split


def encoded_catchments(store: Store) -> list[str]:
    """The catchments the encode stage finished (what decoders and baselines work on)."""
    manifest = partitions.require_manifest(store, layout.ENCODED, "encode")
    return sorted(manifest["catchments"])
