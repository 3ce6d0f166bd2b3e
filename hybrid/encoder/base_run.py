"""Reusing a pre-trained encoder: ``base_run`` names a finished run or a shipped model folder.

The method's promise is an encoder trained once and reused: a run with ``base_run`` skips
pre-training, takes the base's weights, scaler and input lists, and encodes and decodes its own
catchments. Both a run folder and a model folder under ``models/`` hold what is needed in the
same two keys, ``config.yml`` and ``checkpoints/final.pt``.

Inputs must match exactly (a base encoder reads only the inputs, in the order, it was trained
on), and the window length too; that is checked in one line before any work. The model's own
settings (hidden size, layers, ``predict_last_n`` ...) come from the base and are written into
the new run's config. The base's checkpoint is copied into the run, with its URL and sha256 in
``checkpoints/base_run.json``, so the run stays whole if the base moves; ``in_training`` in the
summary means "in the base encoder's training set".
"""

from __future__ import annotations

import json

from hybrid.config import Config
from hybrid.encoder.checkpoints import load_object
from hybrid.errors import ConfigError, StoreError
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.provenance import sha256
from hybrid.store.storage import Store, open_store

log = logger()

BASE_RUN = f"{layout.CHECKPOINTS}/base_run.json"
#: settings of the trained model itself, taken from the base run
MODEL_KEYS = ("hidden_size", "num_layers", "output_dropout", "initial_forget_bias",
              "predict_last_n")
#: settings that must already agree: the encoder reads exactly these
MATCHING_KEYS = ("dynamic_inputs", "static_attributes", "seq_length", "target_variables")


def base_store(cfg: Config) -> Store:
    return open_store(cfg.base_run, cfg.storage_options)


def read_base(cfg: Config) -> tuple[dict, bytes]:
    """(the base's final checkpoint as saved, its bytes), or a one-line error."""
    store = base_store(cfg)
    if not store.exists(layout.FINAL):
        raise StoreError(f"base_run: {store.uri(layout.FINAL)} not found; base_run must name a "
                         "finished run folder or a model folder (models/...) holding "
                         "checkpoints/final.pt")
    data = store.read_bytes(layout.FINAL)
    final = load_object(store, layout.FINAL, data)
    if "config" not in final or "scaler" not in final:
        raise StoreError(f"base_run: {store.uri(layout.FINAL)} records no config or scaler; "
                         "it cannot be reused")
    return final, data


def resolve(cfg: Config) -> Config:
    """The config with the base's model settings; refuses inputs that differ from the base."""
    if not cfg.base_run:
        return cfg
    final, _ = read_base(cfg)
    base = final["config"]
    mine = cfg.to_dict()
    for key in MATCHING_KEYS:
        if mine[key] != base.get(key):
            raise ConfigError(
                f"{key}: {mine[key]!r} differs from the base run's {base.get(key)!r} "
                f"({cfg.base_run}); an encoder reads only the inputs it was trained on")
    changed = {k: base[k] for k in MODEL_KEYS if k in base and mine.get(k) != base[k]}
    if changed:
        log.info("base_run: model settings taken from the base run: "
                 + ", ".join(f"{k} {v}" for k, v in changed.items()))
    return cfg.replace(**changed) if changed else cfg


def adopt(store: Store, cfg: Config, gauges: list[str]) -> dict:
    """Copy the base's checkpoint into the run (once) and record where it came from."""
    final, data = read_base(cfg)
    digest = sha256(data)
    if store.exists(layout.FINAL):
        mine = sha256(store.read_bytes(layout.FINAL))
        if mine != digest:
            raise StoreError(
                f"base_run: {cfg.base_run} now holds another model (sha256 {digest[:12]}) than "
                f"the one this run adopted ({mine[:12]}); use a new run_id")
    else:
        store.write_bytes(layout.FINAL, data)
    train = set(final.get("split", {}).get("train", []))
    split = {"train": sorted(g for g in gauges if g in train),
             "out_of_training": sorted(g for g in gauges if g not in train)}
    if not store.exists(layout.SPLIT) or store.read_json(layout.SPLIT) != split:
        store.write_json(layout.SPLIT, split)
    record = {"url": base_store(cfg).uri(), "sha256": digest,
              "base_training_catchments": len(train)}
    previous = store.read_json(BASE_RUN) if store.exists(BASE_RUN) else None
    if previous != record:
        store.write_text(BASE_RUN, json.dumps(record, indent=2, sort_keys=True))
    log.info(f"pretrain: reusing the encoder of {record['url']} (sha256 {digest[:12]}); "
             f"{len(split['train'])} of this run's {len(gauges)} catchments were in its "
             "training set")
    return record
