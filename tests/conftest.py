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
