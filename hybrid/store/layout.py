"""Every key of a run folder, in one place, so stages share names instead of importing each other.

A run is ``<store>/<run_id>/``::

    config.yml                                   the resolved config (+ provenance), written first
    _lock.json                                   who writes the run now (``hybrid.store.lock``)
    run.log                                      what every command printed, appended per command
    timings.json                                 wall time per stage
    attributes.parquet                           gauge_id + static attributes (float32)
    catchments/<id>/part-0.parquet      gauge_id, date, dynamic inputs, target
    checkpoints/final.pt, epoch-NNN.pt, split.json, history.parquet
    encoded/<id>/part-0.parquet         gauge_id, date, split, observed, regional, h_0..h_{H-1}
    baselines/<model>/predictions/<id>/part-0.parquet   gauge_id, date, <model>
    predictions/<id>/part-0.parquet     gauge_id, date, observed, regional, hybrid (test period)
    metrics/<id>/part-0.parquet         gauge_id, one row per model, every metric
    decoders/gauge_id=<id>/model.skops the fitted forest (decoder.keep_models)
    predict/<start>_<end>/predictions/<id>/part-0.parquet   ``hybrid predict``
    summary/summary.parquet, summary/aggregate.parquet
    report/report.md and PNG figures

A partitioned folder holds nothing but ``<id>/part-0.parquet`` files and the stage's
``_manifest.json`` (which Parquet readers skip), so pandas, pyarrow, DuckDB and Ray Data read it
as one table with no argument. Each file carries its own ``gauge_id`` as a text column, and the
folder is named by the bare id, not ``gauge_id=<id>``, because the two together are what every
reader gets right (tried with pandas 3.1 / pyarrow 26, DuckDB 2.0 and Ray Data 2.60 on
``01013500``):

* hive folders alone (the layout before): pyarrow's partition discovery, and so a plain
  ``pd.read_parquet(folder)``, infers digit-only ids as integers (``1013500``); a merge with the
  summary returns 0 rows without an error, and ``.astype(str)`` cannot bring the zero back;
* hive folders plus the text column: pyarrow refuses to merge the inferred int32 key with the
  file's string column, so ``pd.read_parquet(folder)`` fails outright;
* bare folders plus the text column: no path segment holds ``=``, so no reader discovers a
  partition key; pandas, pyarrow, DuckDB (``read_parquet('folder/*/*.parquet')``, with or
  without ``hive_partitioning``) and Ray Data read the file's string as written.

Run folders written before this layout (``gauge_id=<id>/part-0.parquet``, no column) are still
read by every command (``hybrid.store.partitions.read_partition`` falls back to them). The first
command that runs a stage over such a folder moves its partitions into this layout, adding the
column, keeping each file's stamp, and says so in one log line: nothing is recomputed, and the
folder is never left with both layouts, which no plain reader could read. ``partitioning()``
below still reads an old folder with text ids. Decoders and baseline checkpoints keep their
``gauge_id=<id>`` folders: they are not Parquet, and no table reader looks at them.
"""

from __future__ import annotations

import re

import pyarrow as pa

CONFIG = "config.yml"
RUN_LOG = "run.log"
TIMINGS = "timings.json"
LOCK = "_lock.json"
ATTRIBUTES = "attributes.parquet"

CATCHMENTS = "catchments"
ENCODED = "encoded"
PREDICTIONS = "predictions"
METRICS = "metrics"
BASELINES = "baselines"
DECODERS = "decoders"
PREDICT = "predict"

CHECKPOINTS = "checkpoints"
FINAL = f"{CHECKPOINTS}/final.pt"
SPLIT = f"{CHECKPOINTS}/split.json"
HISTORY = f"{CHECKPOINTS}/history.parquet"

SUMMARY_DIR = "summary"
SUMMARY = f"{SUMMARY_DIR}/summary.parquet"
AGGREGATE = f"{SUMMARY_DIR}/aggregate.parquet"

REPORT_DIR = "report"
REPORT = f"{REPORT_DIR}/report.md"

MANIFEST_NAME = "_manifest.json"
PARTITION_FILE = "part-0.parquet"
PARTITION_KEY = "gauge_id"

#: the schema of the hive partition key of old run folders: pass it to readers so ids stay text
PARTITION_SCHEMA = pa.schema([pa.field(PARTITION_KEY, pa.string())])

#: a catchment id must be usable as one path segment on every filesystem and in a hive folder
#: name: no '/', no '=', no leading dot, no '..', no whitespace
GAUGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def partitioning():
    """``pyarrow.dataset.partitioning`` that reads the ``gauge_id=<id>`` folders of runs written
    before the id was stored in the files, as text."""
    import pyarrow.dataset as ds

    return ds.partitioning(PARTITION_SCHEMA, flavor="hive")


def is_gauge_id(value: object) -> bool:
    return isinstance(value, str) and bool(GAUGE_ID.fullmatch(value)) and ".." not in value


def check_gauge_id(value: object, where: str) -> str:
    """The id itself, or ``ValueError`` naming where it came from (config key, file, manifest).

    Ids read back from the store are checked exactly like ids from the config: a manifest entry
    such as ``x/../../tmp/y`` must never become a path.
    """
    if not is_gauge_id(value):
        raise ValueError(
            f"{where}: {value!r} is not a usable catchment id (letters, digits and '_', '.', '+', "
            "'-' only, starting with a letter or digit, at most 128 characters)")
    return value  # type: ignore[return-value]


def partition_dir(folder: str, gauge_id: str) -> str:
    return f"{folder}/{check_gauge_id(gauge_id, folder)}"


def partition_key(folder: str, gauge_id: str) -> str:
    return f"{partition_dir(folder, gauge_id)}/{PARTITION_FILE}"


def hive_dir(folder: str, gauge_id: str) -> str:
    """``<folder>/gauge_id=<id>``: decoders, baseline checkpoints, and the partitions of runs
    written before the id was stored inside the files."""
    return f"{folder}/{PARTITION_KEY}={check_gauge_id(gauge_id, folder)}"


def legacy_partition_key(folder: str, gauge_id: str) -> str:
    """Where runs written before the id was stored inside the files kept a partition."""
    return f"{hive_dir(folder, gauge_id)}/{PARTITION_FILE}"


def is_partition_key(key: str) -> bool:
    """Whether ``key`` is a catchment partition (either layout): a run can rebuild it."""
    parts = key.rsplit("/", 2)
    return len(parts) == 3 and parts[2] == PARTITION_FILE \
        and is_gauge_id(parts[1].removeprefix(f"{PARTITION_KEY}="))


def manifest_key(folder: str) -> str:
    return f"{folder}/{MANIFEST_NAME}"


def baseline_predictions(model: str) -> str:
    """Folder of a baseline model's predictions (``catchment_wise``, ``finetuned``)."""
    return f"{BASELINES}/{model}/{PREDICTIONS}"


def baseline_checkpoints(model: str, gauge_id: str) -> str:
    """Folder of one catchment's baseline LSTM checkpoints."""
    return hive_dir(f"{BASELINES}/{model}/{CHECKPOINTS}", gauge_id)


def epoch_key(epoch: int, folder: str = CHECKPOINTS) -> str:
    return f"{folder}/epoch-{epoch:03d}.pt"


def feature_columns(hidden_size: int) -> list[str]:
    return [f"h_{i}" for i in range(hidden_size)]


#: the non-metric columns of a metrics partition and of the summary, in order
METRIC_INFO_COLUMNS = ["n_train", "n_test", "n_negative", "fit_seconds", "node_id"]
STATUS_COLUMNS = ["status", "stage", "error"]


def decoder_key(gauge_id: str) -> str:
    """Where a catchment's fitted forest is kept (``decoder.keep_models``; ``skops.io``)."""
    return f"{hive_dir(DECODERS, gauge_id)}/model.skops"


def legacy_decoder_key(gauge_id: str) -> str:
    """Where earlier versions kept a forest as a pickle (refused, never loaded)."""
    return f"{hive_dir(DECODERS, gauge_id)}/model.joblib"


#: model names as they appear in predictions, metrics and the summary
REGIONAL = "regional"
HYBRID = "hybrid"
CORE_MODELS = (REGIONAL, HYBRID)
#: the optional per-catchment LSTMs (config ``baselines``), in report order
CATCHMENT_WISE = "catchment_wise"
FINETUNED = "finetuned"
BASELINE_MODELS = (CATCHMENT_WISE, FINETUNED)
#: stages in the order they run, as the timings and the report list them
STAGE_ORDER = ("prepare", "pretrain", "encode", CATCHMENT_WISE, FINETUNED, "decode", "score")
