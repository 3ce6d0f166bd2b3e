"""The run config: strict YAML loading, one-line errors naming the key, the run folder's copy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from hybrid.config import Config, config_from_dict, load_config, selected_basins
from hybrid.errors import ConfigError, StoreError
from hybrid.stages.prepare import dataset_for
from hybrid.store import layout
from hybrid.store.provenance import config_hash
from hybrid.store.runs import load_run_config, open_run, run_store

CONFIG_KEY = layout.CONFIG

GOOD = """\
run_id: demo
store: {store}
dataset: synthetic
dataset_options: {{n_catchments: 3, seed: 7, start_date: "1995-01-01", end_date: "1999-12-31"}}
dynamic_inputs: [total_precipitation_sum, temperature_2m_mean]
static_attributes: [p_mean, aridity]
target_variables: [streamflow]
train_start_date: 1995-06-01
train_end_date: "1997-12-31"
validation_start_date: 1998-01-01
validation_end_date: 1998-12-31
test_start_date: 1999-01-01
test_end_date: 1999-12-31
seq_length: 30
predict_last_n: 2
hidden_size: 16
output_dropout: 0.25
learning_rate: 0.01
decoder:
  name: rf
  params: {{n_estimators: 5}}
resources:
  decoder_num_cpus: 2
  encoder_num_gpus: 0
"""


def one_line(excinfo: pytest.ExceptionInfo[BaseException], *names: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


def write(tmp_path: Path, text: str, name: str = "run.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def base(tmp_path: Path, **changes) -> dict:
    data = yaml.safe_load(GOOD.format(store=tmp_path / "store"))
    data.update(changes)
    return data


# --- loading ----------------------------------------------------------------------------------


def test_load_yaml_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.format(store=tmp_path / "store")))
    assert isinstance(cfg, Config)
    assert cfg.run_id == "demo"
    assert cfg.dynamic_inputs == ["total_precipitation_sum", "temperature_2m_mean"]
    assert cfg.target == "streamflow"
    # dates: unquoted YAML dates and ISO strings both become datetime.date
    assert cfg.train_start_date == dt.date(1995, 6, 1)
    assert cfg.train_end_date == dt.date(1997, 12, 31)
    assert (cfg.seq_length, cfg.predict_last_n, cfg.hidden_size) == (30, 2, 16)
    assert cfg.output_dropout == 0.25 and isinstance(cfg.learning_rate, float)
    assert cfg.decoder.name == "rf" and cfg.decoder.params == {"n_estimators": 5}
    assert cfg.resources.decoder_num_cpus == 2 and cfg.resources.encoder_num_gpus == 0
    # keys not in the file keep their defaults
    assert cfg.num_layers == 1 and cfg.resources.max_retries == 3
    assert cfg.run_url == str(tmp_path / "store") + "/demo"
    assert cfg.periods()["validation"] == (dt.date(1998, 1, 1), dt.date(1998, 12, 31))


def test_overrides_win_and_roundtrip(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(store=tmp_path / "store"))
    cfg = load_config(path, {"store": "s3://bucket/x", "run_id": "other"})
    assert (cfg.store, cfg.run_id) == ("s3://bucket/x", "other")
    # the resolved YAML loads back to the same config
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert cfg.replace(hidden_size=32).hidden_size == 32


def test_gauge_ids_written_as_numbers_stay_strings(tmp_path: Path) -> None:
    cfg = config_from_dict(base(tmp_path, basins=[1022500, "camels_01031500"]))
    assert cfg.basins == ["1022500", "camels_01031500"]


def test_basin_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "basins.txt").write_text("synthetic_000\n\nsynthetic_002\n")
    text = GOOD.format(store=tmp_path / "store") + "basin_file: basins.txt\n"
    cfg = load_config(write(tmp_path, text))
    assert selected_basins(cfg) == ["synthetic_000", "synthetic_002"]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(tmp_path / "nope.yml")
    one_line(excinfo, "nope.yml")
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, "run_id: x\nseq_length: [1,\n"))
    one_line(excinfo, "run.yml", "YAML")
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, "- a\n- b\n"))
    one_line(excinfo, "run.yml")


def test_run_id_required(tmp_path: Path) -> None:
    data = base(tmp_path)
    del data["run_id"]
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(data)
    one_line(excinfo, "run_id")


# --- strictness -------------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = GOOD.format(store=tmp_path / "store") + "hiden_size: 64\n"
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    message = one_line(excinfo, "'hiden_size'")
    assert "hidden_size" in message  # a suggestion for the typo


def test_unknown_nested_key(tmp_path: Path) -> None:
    text = GOOD.format(store=tmp_path / "store").replace("  name: rf", "  nme: rf")
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    one_line(excinfo, "'decoder.nme'")
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, resources={"decoder_cpus": 2}))
    one_line(excinfo, "'resources.decoder_cpus'")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("hidden_size", "big", ["hidden_size", "integer", "'big'"]),
        ("hidden_size", 1.5, ["hidden_size", "integer"]),
        ("seq_length", True, ["seq_length", "integer"]),
        ("learning_rate", "fast", ["learning_rate", "number"]),
        ("dynamic_inputs", "total_precipitation_sum", ["dynamic_inputs", "list"]),
        ("basins", ["a", {"b": 1}], ["basins[1]", "string"]),
        ("decoder", "rf", ["decoder", "mapping"]),
        ("decoder", {"keep_models": "yes"}, ["decoder.keep_models", "true or false"]),
        ("resources", {"encoder_num_gpus": "many"}, ["resources.encoder_num_gpus"]),
        ("n_train_basins", "ten", ["n_train_basins", "integer"]),
        ("dataset_options", [1, 2], ["dataset_options", "mapping"]),
        ("resources", {"decoder_custom_resources": {"decoder_node": "one"}},
         ["resources.decoder_custom_resources.decoder_node", "number"]),
    ],
)
def test_wrong_type(tmp_path: Path, key: str, value, words: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, **{key: value}))
    one_line(excinfo, *words)


@pytest.mark.parametrize("value", ["2001-13-01", "31/12/2001", "yesterday", 20010101])
def test_bad_date(tmp_path: Path, value) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, train_end_date=value))
    one_line(excinfo, "train_end_date", "YYYY-MM-DD")


def test_bad_date_in_yaml_file(tmp_path: Path) -> None:
    text = GOOD.format(store=tmp_path / "store").replace(
        "test_end_date: 1999-12-31", "test_end_date: 1999-02-30")
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    one_line(excinfo, "test_end_date", "1999-02-30")


@pytest.mark.parametrize("period", ["train", "validation", "test"])
def test_start_after_end(tmp_path: Path, period: str) -> None:
    data = base(tmp_path, **{f"{period}_start_date": "2001-01-02",
                             f"{period}_end_date": "2001-01-01"})
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(data)
    one_line(excinfo, f"{period}_end_date", f"{period}_start_date")


def test_predict_last_n_longer_than_seq_length(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, seq_length=10, predict_last_n=11))
    one_line(excinfo, "predict_last_n", "seq_length")
    assert config_from_dict(base(tmp_path, seq_length=10, predict_last_n=10)).predict_last_n == 10


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"seq_length": 0}, "seq_length"),
        ({"output_dropout": 1.0}, "output_dropout"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"train_basin_fraction": 0.0}, "train_basin_fraction"),
        ({"dynamic_inputs": []}, "dynamic_inputs"),
        ({"dynamic_inputs": ["x", "x"]}, "dynamic_inputs"),
        ({"dynamic_inputs": ["streamflow"]}, "dynamic_inputs"),
        ({"target_variables": ["a", "b"]}, "target_variables"),
        ({"encoder": "magic"}, "encoder"),
        ({"device": "tpu"}, "device"),
        ({"run_id": "a/b"}, "run_id"),
        ({"basins": ["a"], "basin_file": "x.txt"}, "basin"),
        ({"basin_file": "no_such_file.txt"}, "basin_file"),
        ({"basins": []}, "basins"),
        ({"basins": ["ok", "../../etc/x"]}, "basins[1]"),
        ({"basins": ["a b"]}, "basins[0]"),
        ({"basins": ["x", "x"]}, "basins"),
        ({"resources": {"decoder_num_cpus": 0}}, "resources.decoder_num_cpus"),
        ({"resources": {"gpu_wait_minutes": 0}}, "resources.gpu_wait_minutes"),
        ({"resources": {"gpu_wait_minutes": -1.5}}, "resources.gpu_wait_minutes"),
    ],
)
def test_bad_values(tmp_path: Path, changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, **changes))
    one_line(excinfo, key)


@pytest.mark.parametrize(
    ("changes", "key", "said"),
    [
        ({"learning_rate": float("inf")}, "learning_rate", "finite"),
        ({"learning_rate": float("nan")}, "learning_rate", "finite"),
        ({"clip_gradient_norm": float("nan")}, "clip_gradient_norm", "finite"),
        ({"output_dropout": float("nan")}, "output_dropout", "finite"),
        ({"initial_forget_bias": float("-inf")}, "initial_forget_bias", "finite"),
        ({"max_train_minutes": float("inf")}, "max_train_minutes", "finite"),
        ({"baselines": {"finetune_learning_rate": float("nan")}},
         "baselines.finetune_learning_rate", "finite"),
        ({"hidden_size": 1_000_000}, "hidden_size", "between 1 and 4096"),
        ({"seed": 10**23}, "seed", "between 0 and 4294967295"),
        ({"seed": -1}, "seed", "between 0 and 4294967295"),
        ({"num_threads": -3}, "num_threads", ">= 0"),
        ({"resources": {"max_retries": -5}}, "resources.max_retries", ">= 0"),
        ({"max_train_samples_per_epoch": 0}, "max_train_samples_per_epoch", ">= 1"),
        ({"max_train_samples_per_epoch": -5}, "max_train_samples_per_epoch", ">= 1"),
        ({"max_validation_samples": 0}, "max_validation_samples", ">= 1"),
        ({"clip_gradient_norm": -1.0}, "clip_gradient_norm", ">= 0"),
        ({"max_train_minutes": 0}, "max_train_minutes", "> 0"),
        ({"baselines": {"samples_per_epoch": 0}}, "baselines.samples_per_epoch", ">= 1"),
        ({"resources": {"encoder_num_cpus": 0}}, "resources.encoder_num_cpus", "> 0"),
        ({"store": ""}, "store", "empty"),
        ({"data_dir": ""}, "data_dir", "empty"),
        ({"data_dir": "  "}, "data_dir", "empty"),
    ],
)
def test_numbers_and_places_are_checked_before_any_work(tmp_path: Path, changes: dict, key: str,
                                                         said: str) -> None:
    """Non-finite or out-of-range numbers and empty places are one line naming the key; a
    count of 0 is refused instead of silently meaning "all"."""
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, **changes))
    message = one_line(excinfo, key, said)
    assert message.startswith(key)


def test_sane_numbers_still_pass(tmp_path: Path) -> None:
    cfg = config_from_dict(base(tmp_path, seed=0, num_threads=0, max_train_samples_per_epoch=1,
                                clip_gradient_norm=0.0, hidden_size=4096,
                                max_validation_samples=None))
    assert cfg.seed == 0 and cfg.max_validation_samples is None


def test_a_key_given_twice_in_yaml_is_refused_naming_it_and_its_lines(tmp_path: Path) -> None:
    text = GOOD.format(store=tmp_path / "store") + "seed: 3\nepochs: 1\nseed: 4\n"
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    message = one_line(excinfo, "'seed'", "given twice", "run.yml (line")
    assert "first on line" in message
    nested = GOOD.format(store=tmp_path / "store") + "baselines:\n  finetune: true\n" \
        "  finetune: false\n"
    with pytest.raises(ConfigError, match="'finetune' is given twice"):
        load_config(write(tmp_path, nested))


def test_unknown_decoder_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, decoder={"name": "xgboostish"}))
    message = one_line(excinfo, "decoder.name", "'xgboostish'")
    assert "rf" in message  # lists the known ones


def test_unknown_dataset_name(tmp_path: Path) -> None:
    cfg = config_from_dict(base(tmp_path, dataset="camels_xx"))
    with pytest.raises(ConfigError) as excinfo:
        dataset_for(cfg)
    message = one_line(excinfo, "dataset", "'camels_xx'")
    assert "caravan" in message and "synthetic" in message


# --- the resolved config in the run folder ----------------------------------------------------


def test_resolved_config_written_to_run_folder(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(str(tmp_path / "store"))
    store = open_run(cfg)
    path = tmp_path / "store" / "t" / CONFIG_KEY
    assert path.is_file()
    assert store.uri(CONFIG_KEY) == str(path)
    written = yaml.safe_load(path.read_text())
    assert written["hidden_size"] == 8 and written["train_start_date"] == "1995-03-01"
    assert written["decoder"]["params"] == {"n_estimators": 10}
    assert load_run_config(run_store(cfg)) == cfg


def test_rerun_with_changed_model_is_refused(any_store, tiny_config) -> None:
    cfg = tiny_config(*any_store)
    store = open_run(cfg)
    store.write_text("catchments/_manifest.json", "{}")  # the run has produced something
    open_run(cfg)  # same config: fine
    with pytest.raises(StoreError) as excinfo:
        open_run(cfg.replace(hidden_size=16))
    one_line(excinfo, "hidden_size", "8", "16", "'t'")
    # the refused config did not overwrite the run's own
    assert load_run_config(store).hidden_size == 8
    with pytest.raises(StoreError) as excinfo:
        open_run(cfg.replace(decoder={"name": "rf", "params": {"n_estimators": 11}}))
    one_line(excinfo, "decoder")


def test_rerun_with_changed_resources_is_allowed(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(str(tmp_path / "store"))
    store = open_run(cfg)
    store.write_text("catchments/_manifest.json", "{}")
    bigger = cfg.replace(resources={"decoder_num_cpus": 4, "max_in_flight": 8},
                         max_train_minutes=5.0)
    open_run(bigger)
    assert load_run_config(store).resources.decoder_num_cpus == 4


def test_config_may_change_while_run_has_no_outputs(tmp_path: Path, tiny_config) -> None:
    """A run that failed before writing anything (e.g. a typo in basins) can be fixed in place."""
    cfg = tiny_config(str(tmp_path / "store"), basins=["nope"])
    store = open_run(cfg)
    fixed = cfg.replace(basins=["synthetic_000"])
    open_run(fixed)
    assert load_run_config(store).basins == ["synthetic_000"]


SECRETS = {
    # S3 (s3fs / botocore names)
    "key": "AKIA-SECRET-ID", "secret": "very-secret", "token": "session-tok",
    "aws_access_key_id": "AKIA-2", "aws_secret_access_key": "secret-2",
    # Azure (adlfs names)
    "account_key": "azure-account-key", "sas_token": "sv=azure-sas", "client_secret": "az-cs",
    "connection_string": "DefaultEndpointsProtocol=https;AccountKey=az-conn",
    "credential": "az-cred",
    # GCS (gcsfs names)
    "private_key": "gcs-private-key",
    "password": "pw-123",
}


def test_credentials_are_not_written_to_the_run_folder(tmp_path: Path, tiny_config) -> None:
    """Only an allow-list of non-secret storage options reaches config.yml, whatever the
    filesystem calls its credentials (S3, Azure-style and GCS-style names)."""
    options = {"endpoint_url": "http://127.0.0.1:9000", **SECRETS,
               "client_kwargs": {"aws_session_token": "client-tok", "region_name": "eu-west-1"},
               "some_future_option": "unknown-value"}
    cfg = tiny_config(str(tmp_path / "store"), options)
    # a local store ignores the options; only what lands in the run folder matters here
    store = open_run(cfg)
    store.write_text("catchments/_manifest.json", "{}")
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "store").rglob("*")
                   if p.is_file())
    for secret in [*SECRETS.values(), "client-tok", "unknown-value"]:
        assert secret not in text, secret
    written = yaml.safe_load(store.read_text(CONFIG_KEY))
    assert written["storage_options"] == {"endpoint_url": "http://127.0.0.1:9000",
                                          "client_kwargs": {"region_name": "eu-west-1"}}
    open_run(cfg)  # storage_options may differ from what was written: operational
    # a run read back by URL gets the credentials of the store it is opened with
    assert load_run_config(store).storage_options["secret"] == "very-secret"


# --- relative paths, periods, provenance -------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "basins.txt").write_text("synthetic_000\n# a comment\nsynthetic_001\n")
    (folder / "run.yml").write_text(GOOD.format(store="../runs")
                                    + "data_dir: ../data\nbasin_file: basins.txt\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(folder / "run.yml")
    assert cfg.store == str(tmp_path / "runs")
    assert cfg.data_dir == str(tmp_path / "data")
    # the file is read once, into basins: no worker needs it later
    assert cfg.basins == ["synthetic_000", "synthetic_001"] and cfg.basin_file is None
    assert config_from_dict(cfg.to_dict()) == cfg
    # URLs are left alone
    url = load_config(folder / "run.yml", {"store": "s3://bucket/x"})
    assert url.store == "s3://bucket/x"


@pytest.mark.parametrize(("periods", "key"), [
    ({"train_end_date": "1998-06-30"}, "validation_start_date"),
    ({"validation_end_date": "1999-02-01"}, "test_start_date"),
    ({"test_start_date": "1997-01-01", "test_end_date": "1997-12-31"}, "test_start_date"),
])
def test_overlapping_periods_are_refused_unless_allowed(tmp_path: Path, periods: dict,
                                                         key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(base(tmp_path, **periods))
    one_line(excinfo, key, "overlaps", "allow_period_overlap")
    cfg = config_from_dict(base(tmp_path, allow_period_overlap=True, **periods))
    assert cfg.allow_period_overlap


def test_provenance_recorded_and_ignored_on_load(tmp_path: Path, tiny_config) -> None:
    import hybrid
    from hybrid.store.provenance import git_commit

    cfg = tiny_config(str(tmp_path / "store"))
    store = open_run(cfg)
    written = yaml.safe_load(store.read_text(CONFIG_KEY))
    assert written["_provenance"]["hybrid_version"] == hybrid.__version__
    assert written["_provenance"]["git_commit"] == git_commit()
    assert written["_provenance"]["config_hash"] == config_hash(cfg.to_dict())
    # a user who copies the run's config.yml as a new config gets the same run
    assert config_from_dict(written) == cfg.replace(storage_options={})


def test_missing_config_yml_still_refuses_another_model(tmp_path: Path, tiny_config) -> None:
    """The stage manifests record the config hash: losing config.yml opens no hole."""
    from hybrid.store.partitions import write_manifest

    cfg = tiny_config(str(tmp_path / "store"))
    store = open_run(cfg)
    write_manifest(store, layout.CATCHMENTS, "prepare",
                   {"stage": "prepare", "config": config_hash(cfg.to_dict())}, {})
    store.delete(CONFIG_KEY)
    with pytest.raises(StoreError) as excinfo:
        open_run(cfg.replace(hidden_size=16))
    one_line(excinfo, "no readable config.yml", "catchments/", "new run_id")
    open_run(cfg)  # the same config is fine, and config.yml is written again
    assert store.exists(CONFIG_KEY)


def test_damaged_config_yml_is_checked_against_the_manifests(tmp_path: Path, tiny_config,
                                                              capsys) -> None:
    from hybrid.store.partitions import write_manifest

    cfg = tiny_config(str(tmp_path / "store"))
    store = open_run(cfg)
    write_manifest(store, layout.CATCHMENTS, "prepare",
                   {"stage": "prepare", "config": config_hash(cfg.to_dict())}, {})
    store.write_text(CONFIG_KEY, "run_id: [unclosed\n")
    with pytest.raises(StoreError):
        open_run(cfg.replace(hidden_size=16))
    open_run(cfg)
    assert "config.yml is damaged (not valid YAML)" in capsys.readouterr().err
    assert load_run_config(store) == cfg.replace(storage_options={})
