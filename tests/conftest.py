"""Shared fixtures: the real data folder beside the clone, and a real S3 endpoint (moto server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CAMELS data folder; tests that need it skip (with the reason) where it is absent."""
    if not (SHARED_DATA / "caravan").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HYBRID_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def caravan_dir(shared_data: Path) -> Path:
    return shared_data / "caravan"


@pytest.fixture(scope="session")
def camels_us_dir(shared_data: Path) -> Path:
    path = shared_data / "camels_us"
    if not path.is_dir():
        pytest.skip(f"CAMELS-US NCAR data not found at {path}")
    return path


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


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_endpoint, request):
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


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance (2 CPUs) shared by the tests that need Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def tiny_config(store: str, storage_options: dict | None = None, **overrides):
    """A seconds-long synthetic run: the shape of a real one, at toy size."""
    from hybrid.config import config_from_dict

    data = {
        "run_id": "t",
        "store": store,
        "storage_options": storage_options or {},
        "dataset": "synthetic",
        "dataset_options": {"n_catchments": 4, "seed": 1, "start_date": "1995-01-01",
                            "end_date": "1999-12-31"},
        "static_attributes": ["p_mean", "aridity", "frac_snow", "t_mean"],
        "train_start_date": "1995-03-01", "train_end_date": "1997-12-31",
        "validation_start_date": "1998-01-01", "validation_end_date": "1998-12-31",
        "test_start_date": "1999-01-01", "test_end_date": "1999-12-31",
        "seq_length": 60, "hidden_size": 8, "epochs": 2, "batch_size": 64,
        "max_train_samples_per_epoch": 512, "max_validation_samples": 256,
        "n_train_basins": 3, "decoder": {"name": "rf", "params": {"n_estimators": 10}},
    }
    data.update(overrides)
    return config_from_dict(data)


def caravan_config(store: str, caravan_dir, gauges: list[str], **overrides):
    """A small real-data run on Caravan CAMELS-US catchments (short periods, tiny LSTM)."""
    from hybrid.config import config_from_dict

    data = {
        "run_id": "real",
        "store": store,
        "dataset": "caravan",
        "data_dir": str(caravan_dir),
        "basins": gauges,
        "static_attributes": ["p_mean", "pet_mean", "aridity", "frac_snow", "area"],
        "train_start_date": "2000-10-01", "train_end_date": "2005-09-30",
        "validation_start_date": "2005-10-01", "validation_end_date": "2007-09-30",
        "test_start_date": "2007-10-01", "test_end_date": "2009-09-30",
        "seq_length": 90, "hidden_size": 16, "epochs": 3, "batch_size": 128,
        "learning_rate": 0.005, "max_train_samples_per_epoch": 3000,
        "max_validation_samples": 1000, "train_basin_fraction": 0.75,
        "decoder": {"name": "rf", "params": {"n_estimators": 30}},
    }
    data.update(overrides)
    return config_from_dict(data)
