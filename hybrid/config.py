"""The run configuration: one YAML file, typed and checked when it is loaded.

Key names follow NeuralHydrology where they fit (``seq_length``, ``hidden_size``,
``dynamic_inputs``, ``train_start_date`` ...) so its users feel at home; dates are ISO strings.
Every mistake is caught here, before any data is read or any Ray task is scheduled, and the
message names the offending key: a typo in a 400-catchment run should cost seconds, not an hour.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hybrid.errors import ConfigError
from hybrid.layout import check_gauge_id

ENCODERS = ("streaming", "exact")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DecoderConfig:
    """The per-catchment decoder fitted on encoded features."""

    name: str = "rf"
    #: passed to the scikit-learn estimator; empty means the project's measured defaults
    params: dict[str, Any] = field(default_factory=dict)
    #: the days a decoder is fitted on: "train_validation" (training and validation periods, as
    #: the paper's code does: the forest has no early stopping that needs the validation days;
    #: measured better on 79 of 100 CAMELS-US catchments, BENCHMARKS.md) or "train"
    fit_period: Literal["train", "train_validation"] = "train_validation"
    #: keep each fitted forest (decoders/gauge_id=<id>/model.joblib) so that ``hybrid predict``
    #: can serve any period without refitting; BENCHMARKS.md gives the size per catchment
    keep_models: bool = True


@dataclass
class BaselineConfig:
    """Optional site-specific LSTMs (the paper's "catchment-wise" strategy); costly, so off."""

    catchment_wise: bool = False
    catchment_wise_epochs: int = 20
    catchment_wise_hidden_size: int = 64
    #: epochs without improvement of the catchment's validation loss before stopping
    catchment_wise_patience: int = 5
    #: at most this many catchments get one (None: all); they are the costly baseline
    catchment_wise_max_basins: int | None = None
    #: the paper's third strategy: the regional LSTM trained further on each catchment alone
    finetune: bool = False
    finetune_epochs: int = 3
    finetune_learning_rate: float = 2e-4
    #: epochs without improvement of the catchment's validation loss before stopping
    finetune_patience: int = 1
    finetune_max_basins: int | None = None
    #: windows drawn per epoch when one catchment trains alone (both baselines): with long
    #: sequence windows every day is already in hundreds of them, so an epoch of all windows
    #: would repeat each day hundreds of times for no gain
    samples_per_epoch: int | None = 2000


@dataclass
class ResourcesConfig:
    """Where stages run on a Ray cluster; defaults fit ``ray_cluster.yaml``."""

    #: "ray" runs the stages on Ray (a cluster, or a private local instance); "local" runs them
    #: in this process without Ray (a laptop, a debugger)
    executor: Literal["ray", "local"] = "ray"
    #: Ray address (None: connect to a running cluster if RAY_ADDRESS is set, else start locally)
    address: str | None = None
    #: GPUs for the encoder actor: "auto" takes one when the cluster has any, else runs on CPU
    encoder_num_gpus: float | Literal["auto"] = "auto"
    #: CPUs for the encoder actor: "auto" is 1 beside a GPU, else the largest node's CPUs
    encoder_num_cpus: float | Literal["auto"] = "auto"
    #: minutes the encoder actor waits for a GPU node (one the autoscaler adds) before the run
    #: stops with an error; without a bound, a GPU node that never comes is an endless wait
    gpu_wait_minutes: float = 20.0
    #: CPUs per decoder task; the random forest's n_jobs equals it
    decoder_num_cpus: int = 1
    #: memory reserved per decoder task (MiB); 0 leaves it to Ray
    decoder_memory_mb: int = 0
    #: decoder tasks kept in flight by the driver (0: twice the cluster's CPUs)
    max_in_flight: int = 0
    #: decoder tasks are retried this often when a worker or node dies
    max_retries: int = 3
    #: a file:// store on a multi-node cluster is refused unless it is a shared filesystem
    shared_filesystem: bool = False
    #: encode requests kept in flight to the encoder actor
    encode_in_flight: int = 4
    #: custom Ray resources each decoder task asks for, e.g. {"decoder_node": 1} to keep
    #: decoders on the CPU worker type of ray_cluster.yaml
    decoder_custom_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class Config:
    run_id: str
    #: fsspec URL of the object store: a path, file://..., or s3://bucket/prefix
    store: str = "runs"
    #: passed to fsspec (for s3: endpoint_url, key, secret, ...)
    storage_options: dict[str, Any] = field(default_factory=dict)

    dataset: str = "synthetic"
    data_dir: str | None = None
    #: CAMELS-US (NCAR) forcing product
    forcings: str | None = None
    #: loader-specific options, e.g. n_catchments / seed for the synthetic dataset
    dataset_options: dict[str, Any] = field(default_factory=dict)
    #: catchments to use (None: all the dataset has); or a file with one id per line, read
    #: into ``basins`` when the config is loaded (so no remote worker needs the file)
    basins: list[str] | None = None
    basin_file: str | None = None

    dynamic_inputs: list[str] = field(
        default_factory=lambda: [
            "total_precipitation_sum",
            "temperature_2m_mean",
            "potential_evaporation_sum",
        ]
    )
    static_attributes: list[str] = field(
        default_factory=lambda: ["p_mean", "pet_mean", "aridity", "frac_snow", "area"]
    )
    target_variables: list[str] = field(default_factory=lambda: ["streamflow"])

    train_start_date: dt.date = dt.date(1990, 1, 1)
    train_end_date: dt.date = dt.date(2001, 12, 31)
    validation_start_date: dt.date = dt.date(2002, 1, 1)
    validation_end_date: dt.date = dt.date(2004, 12, 31)
    test_start_date: dt.date = dt.date(2005, 1, 1)
    test_end_date: dt.date = dt.date(2009, 12, 31)
    #: overlapping training / validation / test periods let the scaler and the LSTM see test
    #: days; refused unless this says it is meant
    allow_period_overlap: bool = False

    seq_length: int = 365
    #: loss on the last n steps of each window (1 is the paper's many-to-one training)
    predict_last_n: int = 1
    hidden_size: int = 256
    num_layers: int = 1
    output_dropout: float = 0.4
    initial_forget_bias: float = 3.0

    #: "mse" on the standardised target (the paper's), or "nse": each catchment's squared
    #: errors weighted by 1 / (its target std + 0.1)^2 (Kratzert et al. 2019, NeuralHydrology's
    #: NSE loss), so dry and wet catchments count alike
    loss: Literal["mse", "nse"] = "mse"
    #: "bf16" runs the training forward pass under bfloat16 autocast (1.3-1.7x faster on a
    #: CPU with AVX512-BF16, and on GPUs; BENCHMARKS.md measures what it costs in skill);
    #: evaluation and encoding stay in float32
    precision: Literal["fp32", "bf16"] = "fp32"
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    clip_gradient_norm: float = 1.0
    #: epochs without validation improvement before stopping
    patience: int = 5
    #: the learning rate is halved after this many epochs without improvement
    lr_patience: int = 2
    #: samples drawn (without replacement) per epoch; None: all of them
    max_train_samples_per_epoch: int | None = None
    #: validation windows used per epoch (a fixed seeded subset keeps it cheap and comparable)
    max_validation_samples: int | None = 20000
    #: stop training after this wall time (minutes), keeping the best epoch
    max_train_minutes: float | None = None
    #: fraction of catchments the regional LSTM trains on (paper: 371 of 421)
    train_basin_fraction: float = 371 / 421
    #: exact count instead of the fraction
    n_train_basins: int | None = None
    seed: int = 42
    device: str = "auto"
    #: torch CPU threads (0: torch's default)
    num_threads: int = 0

    encoder: str = "streaming"
    encode_batch_size: int = 512

    #: reuse the encoder of a finished run or a shipped model folder (``models/...``): no
    #: pre-training; inputs and seq_length must match it (NeuralHydrology: base_run_dir)
    base_run: str | None = None

    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    # ------------------------------------------------------------------ derived values
    @property
    def target(self) -> str:
        return self.target_variables[0]

    @property
    def run_url(self) -> str:
        return self.store.rstrip("/") + "/" + self.run_id

    def dataset_kwargs(self) -> dict[str, Any]:
        options = dict(self.dataset_options)
        if self.forcings is not None:
            options["forcings"] = self.forcings
        return options

    def periods(self) -> dict[str, tuple[dt.date, dt.date]]:
        return {
            "train": (self.train_start_date, self.train_end_date),
            "validation": (self.validation_start_date, self.validation_end_date),
            "test": (self.test_start_date, self.test_end_date),
        }

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with some top-level keys changed (used by tests and the CLI)."""
        data = self.to_dict()
        data.update(changes)
        return config_from_dict(data)


# ---------------------------------------------------------------------- loading and checks
def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML run file; ``overrides`` (from the CLI) win over the file.

    Relative paths in the file (``store``, ``data_dir``, ``basin_file``, ``base_run``) are
    relative to the file's folder, so a config means the same run from whatever directory it
    is started.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    for key in ("store", "data_dir", "basin_file", "base_run"):
        value = data.get(key)
        if isinstance(value, str) and value and "://" not in value:
            data[key] = str((path.parent / Path(value).expanduser()).resolve())
    data.update(overrides or {})
    return config_from_dict(data)


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text: ``1999-02-30`` then fails in ``_coerce``, naming
    its key, instead of as a bare ``ValueError`` from inside the YAML parser."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A checked config from plain data; ``_provenance`` (written into a run's config.yml by
    hybrid) is ignored, and a ``basin_file`` is read into ``basins``."""
    data = {k: v for k, v in data.items() if k != "_provenance"}
    if data.get("basin_file") is not None:
        data = _read_basin_file(data)
    cfg = _build(Config, data, prefix="")
    _validate(cfg)
    return cfg


def _read_basin_file(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("basins") is not None:
        raise ConfigError("basins: give either basins or basin_file, not both")
    path = Path(str(data["basin_file"])).expanduser()
    try:
        text = path.read_text()
    except OSError:
        raise ConfigError(f"basin_file: file not found: {path.resolve()}") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()
           and not line.lstrip().startswith("#")]
    if not ids:
        raise ConfigError(f"basin_file: {path.resolve()} lists no catchment")
    return {**data, "basins": ids, "basin_file": None}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = _closest(unknown[0], list(fields))
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {key!r}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: unexpected value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".")
    if origin is list:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("]"):
            return str(value)  # gauge ids written without quotes in YAML
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an ISO date (YYYY-MM-DD), got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not user input


def _validate(cfg: Config) -> None:
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
    if cfg.learning_rate <= 0:
        raise ConfigError(f"learning_rate: must be > 0, got {cfg.learning_rate}")
    if not 0.0 < cfg.train_basin_fraction <= 1.0:
        raise ConfigError(
            f"train_basin_fraction: must be in (0, 1], got {cfg.train_basin_fraction}")
    if cfg.n_train_basins is not None and cfg.n_train_basins < 1:
        raise ConfigError(f"n_train_basins: must be >= 1, got {cfg.n_train_basins}")
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
    res = cfg.resources
    if res.decoder_num_cpus < 1:
        raise ConfigError(f"resources.decoder_num_cpus: must be >= 1, got {res.decoder_num_cpus}")
    if res.encoder_num_gpus != "auto" and res.encoder_num_gpus < 0:
        raise ConfigError("resources.encoder_num_gpus: must be >= 0 or 'auto'")
    if not res.gpu_wait_minutes > 0:
        raise ConfigError(f"resources.gpu_wait_minutes: must be > 0, got {res.gpu_wait_minutes}")
    from hybrid.decoders import check_decoder, decoder_names  # local: decoders import sklearn

    if cfg.decoder.name not in decoder_names():
        raise ConfigError(
            f"decoder.name: unknown decoder {cfg.decoder.name!r}; "
            f"choose one of {', '.join(decoder_names())}")
    check_decoder(cfg.decoder.name, cfg.decoder.params)


def default_config_dict() -> dict[str, Any]:
    """Every key at its default, as plain data (what an omitted key means)."""
    return Config(run_id="defaults").to_dict()


def selected_basins(cfg: Config) -> list[str] | None:
    """The catchments a config names explicitly (None: every catchment of the dataset)."""
    return cfg.basins


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
