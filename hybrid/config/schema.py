"""The run configuration's keys, their types and defaults: one dataclass per section.

Key names follow NeuralHydrology where they fit (``seq_length``, ``hidden_size``,
``dynamic_inputs``, ``train_start_date`` ...) so its users feel at home; dates are ISO strings.
Every mistake is caught here, before any data is read or any Ray task is scheduled, and the
message names the offending key: a typo in a 400-catchment run should cost seconds, not an hour.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

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
    #: keep each fitted forest (decoders/gauge_id=<id>/model.skops) so that ``hybrid predict``
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

    def cluster_address(self) -> str | None:
        """The Ray cluster a run joins: ``address``, else RAY_ADDRESS (what ``ray job submit``
        sets); None means a private local instance."""
        return self.address or os.environ.get("RAY_ADDRESS") or None


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
    #: inputs computed while the canonical tables are built, by name, with the columns and
    #: attributes they read, e.g. {pet_oudin: {temperature: temperature_2m_mean, latitude:
    #: gauge_lat}}; list the name in dynamic_inputs to use it (hybrid.data.derived)
    derived_inputs: dict[str, dict[str, str]] = field(default_factory=dict)

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
    #: clip the LSTMs' and the decoders' predictions of the target at zero before they are
    #: written and scored (NeuralHydrology's ``clip_targets_to_zero``). It cannot lower an NSE
    #: where flow is never negative, but off by default: on 50 real catchments it left both
    #: medians as they were (BENCHMARKS.md, section 8), and a default that changed would
    #: silently change what an existing run computes (a key at its default is not part of
    #: the config hash). The summary's ``n_negative`` counts what a model predicted below zero
    clip_targets_to_zero: bool = False
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    clip_gradient_norm: float = 1.0
    #: epochs without validation improvement before stopping
    patience: int = 5
    #: what picks the best epoch (and stops training): the validation loss, or the median
    #: validation NSE over catchments (the number skill targets are stated in; a mean loss can
    #: be led by a few catchments, which matters when few are held out)
    stopping_metric: Literal["loss", "median_nse"] = "loss"
    #: the learning rate is halved after this many epochs without improvement
    lr_patience: int = 2
    #: samples drawn (without replacement) per epoch; None: all of them
    max_train_samples_per_epoch: int | None = None
    #: validation windows used per epoch (a fixed seeded subset keeps it cheap and comparable)
    max_validation_samples: int | None = 20000
    #: regularisation: Adam's L2 weight decay, and Gaussian noise (in standardised units) on the
    #: training batches' targets (NeuralHydrology's target_noise_std) and dynamic inputs
    weight_decay: float = 0.0
    target_noise_std: float = 0.0
    input_noise_std: float = 0.0
    #: stop training after this wall time (minutes), keeping the best epoch
    max_train_minutes: float | None = None
    #: fraction of catchments the regional LSTM trains on (paper: 371 of 421)
    train_basin_fraction: float = 371 / 421
    #: exact count instead of the fraction
    n_train_basins: int | None = None
    #: share of the training pool held out of the gradient steps and used for early stopping
    #: (spatial validation, as PUB studies do); 0 stops on the training catchments' validation
    #: years (temporal validation) as before
    validation_basin_fraction: float = 0.0
    seed: int = 42
    #: draws the catchment split (training / held-out / out of training); None: ``seed``. Set
    #: it to keep one split while ``seed`` varies the weights, as the members of a seed
    #: ensemble need (they must share the scaler: hybrid.encoder.ensemble)
    split_seed: int | None = None
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
        from hybrid.config.loading import config_from_dict

        return config_from_dict(data)


def default_config_dict() -> dict[str, Any]:
    """Every key at its default, as plain data (what an omitted key means)."""
    return Config(run_id="defaults").to_dict()


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
