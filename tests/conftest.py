"""Shared fixtures: config factories, a small Caravan layout written on demand, the real data
folder beside the clone, a real S3 endpoint (moto server) and a real local Ray instance.

Tests get what they need as fixtures (``tiny_config``, ``caravan_config``, ``caravan_files``)
rather than importing helpers from this file, so each test file reads on its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
INPUTS = ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"]


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CAMELS data folder; tests that need it skip (with the reason) where it is absent."""
    if not (SHARED_DATA / "caravan").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HYBRID_SHARED_DATA to its path)")
    return SHARED_DATA


#: KubeRay's RayJob CRD, release v1.6.2 (tests/data/README.md, <shared data>/kuberay/README.md)
KUBERAY_CRD = "ray.io_rayjobs.yaml"
KUBERAY_CRD_SHA256 = "ecae45d9a5dc1be68f1074ba784c495ef9d439d295253b61e1bd51f7b08522f5"


@pytest.fixture(scope="session")
def kuberay_crd() -> Path:
    """KubeRay's RayJob CRD: the file HYBRID_KUBERAY_CRD names, else the shared data's copy
    (``<shared data>/kuberay/``), else ``tests/data/``; skips, naming those places, without one.

    A copy found in the default places must be the documented release (its sha256): a schema of
    another release would validate the manifest against other rules without saying so.
    """
    import hashlib

    named = os.environ.get("HYBRID_KUBERAY_CRD")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"HYBRID_KUBERAY_CRD={named}: no such file")
        return Path(named)
    places = [SHARED_DATA / "kuberay" / KUBERAY_CRD, REPO / "tests" / "data" / KUBERAY_CRD]
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        pytest.skip(f"KubeRay's RayJob CRD not found at {' or '.join(map(str, places))} (set "
                    "HYBRID_SHARED_DATA or HYBRID_KUBERAY_CRD; see tests/data/README.md)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == KUBERAY_CRD_SHA256, f"{path}: sha256 {digest}, not KubeRay v1.6.2's"
    return path


@pytest.fixture(scope="session")
def caravan_dir(shared_data: Path) -> Path:
    return shared_data / "caravan"


@pytest.fixture(scope="session")
def camels_us_dir(shared_data: Path) -> Path:
    path = shared_data / "camels_us"
    if not path.is_dir():
        pytest.skip(f"CAMELS-US NCAR data not found at {path}")
    return path


# ------------------------------------------------------------------------------ S3
_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint over HTTP (moto's server), as s3fs's own test suite uses.

    ``.ci/run`` may start one and export HYBRID_TEST_S3_ENDPOINT; otherwise the tests start a
    threaded server on a free loopback port.
    """
    endpoint = os.environ.get("HYBRID_TEST_S3_ENDPOINT")
    server = None
    if not endpoint:
        moto_server = pytest.importorskip("moto.server")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server is not None:
            server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket; returns (store URL, storage_options) for a Store."""
    import uuid

    import s3fs

    name = "hyb-" + uuid.uuid4().hex[:12]
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing")
    fs.mkdir(name)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    return f"s3://{name}/runs", options


@pytest.fixture(params=["file", "s3"])
def any_store(request, tmp_path):
    """The same test against a local folder and against the moto S3 endpoint."""
    if request.param == "file":
        return str(tmp_path / "store"), {}
    return request.getfixturevalue("s3_bucket")


# ------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="session", autouse=True)
def no_ray_address():
    """The tests run on Ray instances of their own: a RAY_ADDRESS left in the shell (what
    infra/local/start_cluster.sh prints) would send their runs to that cluster instead, where a
    local store is refused. Tests that join a cluster set it themselves."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance (2 CPUs) shared by the tests that need Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------ configs
TINY = {
    "run_id": "t",
    "dataset": "synthetic",
    "dataset_options": {"n_catchments": 4, "seed": 1, "start_date": "1995-01-01",
                        "end_date": "1999-12-31"},
    "static_attributes": ["p_mean", "aridity", "frac_snow", "t_mean"],
    "train_start_date": "1995-03-01", "train_end_date": "1997-12-31",
    "validation_start_date": "1998-01-01", "validation_end_date": "1998-12-31",
    "test_start_date": "1999-01-01", "test_end_date": "1999-12-31",
    "seq_length": 60, "hidden_size": 8, "epochs": 2, "batch_size": 64, "num_threads": 1,
    "max_train_samples_per_epoch": 512, "max_validation_samples": 256,
    # forests on the training period alone: the tests that break a catchment's training days
    # mean the days the forest sees (test_decode covers both fit periods)
    "n_train_basins": 3,
    "decoder": {"name": "rf", "params": {"n_estimators": 10}, "fit_period": "train"},
    "resources": {"executor": "local"},
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Callable:
    """A seconds-long synthetic run (the shape of a real one, at toy size), without Ray unless
    ``resources`` says otherwise: ``tiny_config(store=..., storage_options=..., **keys)``."""
    from hybrid.config import config_from_dict

    def make(store: str | None = None, storage_options: dict | None = None, **overrides):
        data = {**TINY, "store": store or str(tmp_path_factory.mktemp("store")),
                "storage_options": storage_options or {}}
        data.update(overrides)
        return config_from_dict(data)

    return make


@pytest.fixture(scope="session")
def finished_tiny(tmp_path_factory, tiny_config):
    """A finished tiny run (one epoch), made once per session; tests damage private copies."""
    from hybrid.stages import run_all

    cfg = tiny_config(str(tmp_path_factory.mktemp("finished")), epochs=1)
    assert run_all(cfg).exit_code == 0
    return cfg


@pytest.fixture
def finished_copy(finished_tiny, tmp_path):
    """(cfg, store) of a private copy of ``finished_tiny``."""
    import shutil

    from hybrid.store.runs import run_store

    target = tmp_path / "store"
    shutil.copytree(finished_tiny.store, target)
    cfg = finished_tiny.replace(store=str(target))
    return cfg, run_store(cfg)


@pytest.fixture(scope="session")
def caravan_config(tmp_path_factory) -> Callable:
    """A small real-data run on Caravan CAMELS-US catchments (short periods, tiny LSTM)."""
    from hybrid.config import config_from_dict

    def make(data_dir, gauges: list[str], store: str | None = None, **overrides):
        data = {
            "run_id": "real", "store": store or str(tmp_path_factory.mktemp("store")),
            "dataset": "caravan", "data_dir": str(data_dir), "basins": gauges,
            "static_attributes": ["p_mean", "pet_mean", "aridity", "frac_snow", "area"],
            "train_start_date": "2000-10-01", "train_end_date": "2005-09-30",
            "validation_start_date": "2005-10-01", "validation_end_date": "2007-09-30",
            "test_start_date": "2007-10-01", "test_end_date": "2009-09-30",
            "seq_length": 90, "hidden_size": 16, "epochs": 3, "batch_size": 128,
            "learning_rate": 0.005, "max_train_samples_per_epoch": 3000,
            "max_validation_samples": 1000, "train_basin_fraction": 0.75, "num_threads": 1,
            "decoder": {"name": "rf", "params": {"n_estimators": 30}},
            "resources": {"executor": "local"},
        }
        data.update(overrides)
        return config_from_dict(data)

    return make


class CaravanFiles:
    """Writes a small Caravan layout (CSV per catchment, one attribute table) for bad-input
    tests; every value is made here, so each test states exactly what is wrong."""

    HEADER = "date," + ",".join(INPUTS) + ",streamflow"

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def lines(start: str = "2000-01-01", end: str = "2001-12-31", flow=None) -> list[str]:
        dates = pd.date_range(start, end, freq="D")
        rows = [CaravanFiles.HEADER]
        for i, day in enumerate(dates):
            q = flow(day) if flow else 1.0 + (i % 7) / 10
            q_text = "" if q is None or (isinstance(q, float) and math.isnan(q)) else f"{q}"
            rows.append(f"{day.date()},{i % 5 * 1.5},{-3 + i % 20},{1.25},{q_text}")
        return rows

    def write(self, series: dict[str, list[str] | str], attributes: str | None = None) -> Path:
        """``series`` maps gauge id -> CSV lines (header included) or raw text."""
        for gauge, lines in series.items():
            folder = self.root / "timeseries" / "csv" / gauge.split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
            (folder / f"{gauge}.csv").write_text(text)
        for region in sorted({g.split("_")[0] for g in series}):
            folder = self.root / "attributes" / region
            if folder.is_dir() and attributes is None:
                continue  # keep the table of an earlier call
            folder.mkdir(parents=True, exist_ok=True)
            text = attributes or "gauge_id,p_mean,aridity\n" + "".join(
                f"{g},{2.0 + i},{0.5 + i / 10}\n" for i, g in enumerate(sorted(series)))
            (folder / f"attributes_caravan_{region}.csv").write_text(text)
        return self.root

    def config(self, store: str, **changes):
        from hybrid.config import config_from_dict

        data = {
            "run_id": "bad", "store": store, "dataset": "caravan", "data_dir": str(self.root),
            "static_attributes": ["p_mean", "aridity"],
            "train_start_date": "2000-03-01", "train_end_date": "2000-12-31",
            "validation_start_date": "2001-01-01", "validation_end_date": "2001-06-30",
            "test_start_date": "2001-07-01", "test_end_date": "2001-12-31",
            "seq_length": 30, "hidden_size": 4, "epochs": 1, "batch_size": 64,
            "max_train_samples_per_epoch": 256, "max_validation_samples": 128,
            "num_threads": 1, "n_train_basins": 1,
            "decoder": {"name": "rf", "params": {"n_estimators": 5}, "fit_period": "train"},
            "resources": {"executor": "local"},
        }
        data.update(changes)
        return config_from_dict(data)


@pytest.fixture
def caravan_files(tmp_path) -> CaravanFiles:
    return CaravanFiles(tmp_path / "data")


def one_line(message: str, *names: object) -> str:
    """Assert an error message is one line and names each of ``names``."""
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, f"{name!s} not in {message!r}"
    return message


@pytest.fixture
def assert_one_line() -> Callable[..., str]:
    return one_line
