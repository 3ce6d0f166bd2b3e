"""Checks across keys that types alone cannot express: periods, sizes, lists, resources.

Run on every config as it is built, before any data is read or any Ray task is scheduled.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from hybrid.config.schema import DEVICES, ENCODERS, Config
from hybrid.data.derived import check_derived
from hybrid.errors import ConfigError, redact
from hybrid.store.layout import check_gauge_id


def validate(cfg: Config) -> None:
    for check in (_check_numbers, _check_places, _check_periods, _check_sizes,
                  _check_variables, _check_basins, _check_resources, _check_decoder):
        check(cfg)


#: the largest LSTM the package is meant to train (a hidden size of a million is a typo: its
#: weights alone would take terabytes)
MAX_HIDDEN_SIZE = 4096
MAX_SEED = 2**32 - 1
#: key -> (lowest, highest) allowed, inclusive; None: no bound on that side. A key whose value
#: may be null (``max_train_samples_per_epoch``: all) is checked only when it is set, so 0 or
#: a negative number is refused instead of silently meaning "all".
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, MAX_SEED),
    "split_seed": (0, MAX_SEED),
    "hidden_size": (1, MAX_HIDDEN_SIZE),
    "num_layers": (1, 16),
    "num_threads": (0, None),
    "clip_gradient_norm": (0, None),
    "lr_patience": (0, None),
    "max_train_samples_per_epoch": (1, None),
    "max_validation_samples": (1, None),
    "baselines.catchment_wise_epochs": (1, None),
    "baselines.catchment_wise_hidden_size": (1, MAX_HIDDEN_SIZE),
    "baselines.catchment_wise_patience": (1, None),
    "baselines.catchment_wise_max_basins": (1, None),
    "baselines.finetune_epochs": (1, None),
    "baselines.finetune_patience": (1, None),
    "baselines.finetune_max_basins": (1, None),
    "baselines.samples_per_epoch": (1, None),
    "resources.decoder_memory_mb": (0, None),
    "resources.max_in_flight": (0, None),
    "resources.max_retries": (0, None),
    "resources.encode_in_flight": (1, None),
}
#: keys that must be strictly positive numbers
POSITIVE = ("learning_rate", "max_train_minutes", "baselines.finetune_learning_rate",
            "resources.encoder_num_cpus")


def _numbers(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every number of the config (nested sections too) by its dotted key."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_numbers(value, f"{prefix}{f.name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + f.name] = value
    return out


def _check_numbers(cfg: Config) -> None:
    """Finite and in range, before any work: a NaN learning rate or a seed of -1 would
    otherwise fail as a traceback after pre-processing, or train a NaN model."""
    numbers = _numbers(cfg)
    for key, value in numbers.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
    for key, (low, high) in RANGES.items():
        value = numbers.get(key)
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                bounds = f"between {low} and {high}"
            else:
                bounds = f">= {low}" if low is not None else f"<= {high}"
            raise ConfigError(f"{key}: must be {bounds}, got {value}")
    for key in POSITIVE:
        value = numbers.get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")


def _check_places(cfg: Config) -> None:
    """An empty ``store`` would write the run at the filesystem's root, an empty
    ``data_dir`` would read the working directory as the dataset."""
    options = cfg.storage_options or {}
    urls = {"store": cfg.store, "data_dir": cfg.data_dir, "base_run": cfg.base_run,
            "forcings": cfg.forcings,
            "storage_options.endpoint_url": options.get("endpoint_url"),
            "storage_options.client_kwargs.endpoint_url":
                (options.get("client_kwargs") or {}).get("endpoint_url")}
    for key, value in urls.items():
        if not isinstance(value, (str, type(None))):
            continue
        if value is not None and not value.strip() and "." not in key:
            raise ConfigError(f"{key}: is empty; give a folder or URL, or leave the key out")
        if value is not None and redact(value) != value:
            raise ConfigError(
                f"{key}: {redact(value)}: credentials inside a URL are refused (they would end "
                "up in logs); give them as storage_options key and secret, or through the "
                "environment")


def _check_periods(cfg: Config) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.run_id):
        raise ConfigError(f"run_id: use letters, digits, '_', '.', '-' only, got {cfg.run_id!r}")
    for name in ("train", "validation", "test"):
        start, end = getattr(cfg, f"{name}_start_date"), getattr(cfg, f"{name}_end_date")
        if start > end:
            raise ConfigError(f"{name}_end_date: {end} is before {name}_start_date {start}")
    if not cfg.allow_period_overlap:
        periods = cfg.periods()
        names = list(periods)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (a0, a1), (b0, b1) = periods[a], periods[b]
                if a0 <= b1 and b0 <= a1:
                    raise ConfigError(
                        f"{b}_start_date: the {a} period ({a0}..{a1}) overlaps the {b} period "
                        f"({b0}..{b1}), so {b} days would be learnt from; separate them, or set "
                        "allow_period_overlap: true if that is meant")


def _check_sizes(cfg: Config) -> None:
    positive = ("seq_length", "predict_last_n", "hidden_size", "num_layers", "epochs",
                "batch_size", "encode_batch_size", "patience")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.predict_last_n > cfg.seq_length:
        raise ConfigError(
            f"predict_last_n: {cfg.predict_last_n} exceeds seq_length {cfg.seq_length}")
    if not 0.0 <= cfg.output_dropout < 1.0:
        raise ConfigError(f"output_dropout: must be in [0, 1), got {cfg.output_dropout}")
    for key in ("weight_decay", "target_noise_std", "input_noise_std"):
        value = getattr(cfg, key)
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{key}: must be a finite number >= 0, got {value}")
    if not 0.0 < cfg.train_basin_fraction <= 1.0:
        raise ConfigError(
            f"train_basin_fraction: must be in (0, 1], got {cfg.train_basin_fraction}")
    if not 0.0 <= cfg.validation_basin_fraction < 1.0:
        raise ConfigError("validation_basin_fraction: must be in [0, 1), got "
                          f"{cfg.validation_basin_fraction}")
    if cfg.n_train_basins is not None and cfg.n_train_basins < 1:
        raise ConfigError(f"n_train_basins: must be >= 1, got {cfg.n_train_basins}")


def _check_variables(cfg: Config) -> None:
    check_derived(cfg.derived_inputs)
    if not cfg.dynamic_inputs:
        raise ConfigError("dynamic_inputs: at least one input variable is needed")
    if len(cfg.target_variables) != 1:
        raise ConfigError(
            f"target_variables: exactly one target is supported, got {cfg.target_variables}")
    for key in ("dynamic_inputs", "static_attributes"):
        values = getattr(cfg, key)
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ConfigError(f"{key}: {dupes[0]!r} is listed twice")
    if cfg.target in cfg.dynamic_inputs:
        raise ConfigError(f"dynamic_inputs: the target {cfg.target!r} cannot also be an input")
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"encoder: expected one of {list(ENCODERS)}, got {cfg.encoder!r}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device: expected one of {list(DEVICES)}, got {cfg.device!r}")


def _check_basins(cfg: Config) -> None:
    if cfg.basins is not None:
        if not cfg.basins:
            raise ConfigError("basins: the list is empty; leave the key out to use every "
                              "catchment of the dataset")
        for i, gauge_id in enumerate(cfg.basins):
            try:
                check_gauge_id(gauge_id, f"basins[{i}]")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        dupes = sorted({g for g in cfg.basins if cfg.basins.count(g) > 1})
        if dupes:
            raise ConfigError(f"basins: {dupes[0]!r} is listed twice")


def _check_resources(cfg: Config) -> None:
    res = cfg.resources
    if res.decoder_num_cpus < 1:
        raise ConfigError(f"resources.decoder_num_cpus: must be >= 1, got {res.decoder_num_cpus}")
    if res.encoder_num_gpus != "auto" and res.encoder_num_gpus < 0:
        raise ConfigError("resources.encoder_num_gpus: must be >= 0 or 'auto'")
    if not res.gpu_wait_minutes > 0:
        raise ConfigError(f"resources.gpu_wait_minutes: must be > 0, got {res.gpu_wait_minutes}")


def _check_decoder(cfg: Config) -> None:
    from hybrid.decoder.regressors import (  # local: decoders import sklearn
        check_decoder,
        decoder_names,
    )

    if cfg.decoder.name not in decoder_names():
        raise ConfigError(
            f"decoder.name: unknown decoder {cfg.decoder.name!r}; "
            f"choose one of {', '.join(decoder_names())}")
    check_decoder(cfg.decoder.name, cfg.decoder.params)
