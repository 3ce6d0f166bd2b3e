"""The pipeline as a Ray job on a real two-node Ray cluster, with a real S3 endpoint.

A module fixture starts two raylets on this machine with ``ray start`` (same interpreter as the
tests): a head node that claims one (fake) GPU and a custom resource ``gpu_node``, and a worker
node with two CPUs, no GPU and ``decoder_node``. Token authentication is on (a fresh token, given
to the Ray processes through RAY_AUTH_TOKEN and to this process's HTTP clients as a header, so
the tests' own in-process Ray is untouched). The run is submitted with the Jobs API on three real
Caravan catchments and must leave its summary in the moto S3 bucket, with the encoder on the GPU
node and every decoder on the other one. The nodes are stopped by their temp dir and node ids,
never with ``ray stop``, so other Ray instances on the machine keep running.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

GAUGES = ["camels_01022500", "camels_01031500", "camels_01047000"]
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
JOB_TIMEOUT_S = 300


def _free_ports(n: int) -> list[int]:
    """n distinct loopback ports nothing listens on (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """Two raylets on this machine, started and stopped by this test module only."""

    def __init__(self) -> None:
        # Short: Ray puts unix sockets under it (path limit ~107 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="hyb-mn-", dir="/tmp")
        self.token = secrets.token_hex(32)
        self.gcs_port, self.dashboard_port, self.client_port, agent_head, agent_worker = \
            _free_ports(5)
        # The dashboard agent's HTTP port defaults to 52365 on every node: two nodes (and any
        # other Ray on the machine) need their own.
        self.agent_ports = (agent_head, agent_worker)
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.head_id = self.worker_id = ""
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        # The job's entrypoint inherits the PATH of `ray start`: this interpreter's bin first.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                   PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
        self.env = env

    def start(self) -> None:
        common = ["--node-ip-address", "127.0.0.1", "--object-store-memory",
                  str(300 * 1024**2), "--disable-usage-stats"]
        # One temp dir per node: two nodes sharing one would each forward every worker's
        # output to the driver, and the job log would show the actor's lines twice.
        self._ray_start(
            "--head", "--port", str(self.gcs_port),
            "--num-cpus", "1", "--num-gpus", "1", "--resources", json.dumps({"gpu_node": 1}),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--dashboard-agent-listen-port", str(self.agent_ports[0]),
            "--ray-client-server-port", str(self.client_port),
            "--temp-dir", os.path.join(self.temp_dir, "head"), *common)
        self._ray_start(
            "--address", f"127.0.0.1:{self.gcs_port}",
            "--num-cpus", "2", "--num-gpus", "0", "--resources", json.dumps({"decoder_node": 2}),
            "--dashboard-agent-listen-port", str(self.agent_ports[1]),
            "--temp-dir", os.path.join(self.temp_dir, "worker"), *common)
        nodes = self._wait_for_nodes(2)
        self.head_id = next(n.node_id for n in nodes if n.resources_total.get("gpu_node"))
        self.worker_id = next(n.node_id for n in nodes
                              if n.resources_total.get("decoder_node"))

    def _ray_start(self, *args: str) -> None:
        out = subprocess.run([*RAY_CLI, "start", *args], env=self.env, capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args[:2])} failed:\n{out.stdout[-3000:]}"
                               f"\n{out.stderr[-3000:]}")

    def _wait_for_nodes(self, n: int, timeout: float = 60):
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        client = StateApiClient(address=self.dashboard_url, headers=self.headers)
        deadline = time.monotonic() + timeout
        while True:
            try:
                nodes = [node for node in client.list(
                    StateResource.NODES, options=ListApiOptions(detail=True),
                    raise_on_missing_output=False) if node.state == "ALIVE"]
                if len(nodes) >= n:
                    return nodes
            except Exception as err:  # noqa: BLE001 - the dashboard may still be starting
                nodes = [err]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} Ray nodes not alive after {timeout:.0f}s: {nodes}")
            time.sleep(1)

    def jobs(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url, headers=self.headers)

    def stop(self) -> None:
        """Stop this cluster's processes only: those naming its temp dir or node ids, the Ray
        Client server on its port, and their children (workers rename themselves "ray::...").
        SIGTERM, then SIGKILL after a grace period - what infra/local/stop.sh does."""
        import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)

        psutil = importlib.import_module("psutil")

        tmp = self.temp_dir.rstrip("/")
        node_flags = {f"--node-id={n}" for n in (self.head_id, self.worker_id) if n}
        client_port = f"--port={self.client_port}"

        def ours(args: list[str]) -> bool:
            if "ray.util.client.server" in args and client_port in args:
                return True
            for arg in args:
                if arg in node_flags:
                    return True
                value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
                if value == tmp or value.startswith(tmp + "/"):
                    return True
            return False

        found = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if ours(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        found.pop(os.getpid(), None)
        procs = list(found.values())
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(request) -> LocalCluster:
    local = LocalCluster()
    request.addfinalizer(local.stop)  # before anything starts: a failed start is cleaned too
    local.start()
    return local


@pytest.fixture(scope="module")
def bucket(s3_endpoint) -> tuple[str, str]:
    import s3fs

    name = "hyb-mn-" + uuid.uuid4().hex[:8]
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing").mkdir(name)
    return name, s3_endpoint


REPO = Path(__file__).resolve().parents[1]


def _working_dir(root: Path, cfg) -> Path:
    """What the job ships: the package, the entrypoints and the run config."""
    for folder in ("hybrid", "jobs"):
        shutil.copytree(REPO / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "run.yml").write_text(cfg.to_yaml())
    return root


def _run_job(local: LocalCluster, working_dir: Path, env_vars: dict | None = None,
             timeout: float = JOB_TIMEOUT_S) -> tuple[str, str]:
    """Submit ``jobs/run_pipeline.py --config run.yml``; wait; return (status, logs)."""
    client = local.jobs()
    job_id = client.submit_job(
        entrypoint=f"{shlex.quote(sys.executable)} jobs/run_pipeline.py --config run.yml",
        runtime_env={"working_dir": str(working_dir), "env_vars": env_vars or {}})
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {timeout:.0f}s; logs:\n"
                        f"{client.get_job_logs(job_id)[-6000:]}")
        time.sleep(2)
    # the last lines can reach the job log a moment after the status turns terminal
    time.sleep(1)
    return str(status.value), client.get_job_logs(job_id)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}


# ------------------------------------------------------------------------ on the cluster


def test_pipeline_job_places_encoder_on_gpu_node_and_decoders_on_cpu_node(
        ray_cluster: LocalCluster, bucket, caravan_dir, caravan_config, tmp_path) -> None:
    import pandas as pd
    import s3fs

    name, endpoint = bucket
    run_id = "mn-" + uuid.uuid4().hex[:8]
    # Credentials reach the job through its environment only, as on a real cluster.
    cfg = caravan_config(
        caravan_dir.resolve(), GAUGES, store=f"s3://{name}/runs", run_id=run_id,
        storage_options={"endpoint_url": endpoint},
        seq_length=60, hidden_size=8, epochs=1, max_train_samples_per_epoch=1000,
        max_validation_samples=500, decoder={"name": "rf", "params": {"n_estimators": 10}},
        resources={"executor": "ray", "encoder_num_gpus": "auto",
                   "decoder_custom_resources": {"decoder_node": 1}})
    status, logs = _run_job(ray_cluster, _working_dir(tmp_path, cfg), _aws_env(endpoint))
    assert status == "SUCCEEDED", f"job {status}; logs:\n{logs[-8000:]}"

    run = f"{name}/runs/{run_id}"
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    summary = pd.read_parquet(f"s3://{run}/summary/summary.parquet",
                              storage_options={"endpoint_url": endpoint, "key": "testing",
                                               "secret": "testing"})
    assert sorted(zip(summary.gauge_id, summary.model)) == \
        sorted((g, m) for g in GAUGES for m in ("hybrid", "regional"))
    assert (summary.status == "done").all(), summary[["gauge_id", "model", "error"]]
    assert summary.nse.notna().all()

    # placement: pre-training on the (fake) GPU node; encoding and every decoder task fan out
    # over the CPU worker type (decoder_custom_resources)
    timings = json.loads(fs.cat_file(f"{run}/timings.json"))
    assert timings["pretrain"]["node_id"] == ray_cluster.head_id, timings
    assert timings["encode"]["node_ids"] == [ray_cluster.worker_id], timings
    assert set(summary.node_id) == {ray_cluster.worker_id}
    assert timings["decode"]["catchments"] == len(GAUGES) and timings["decode"]["failed"] == 0
    assert fs.exists(f"{run}/report/report.md")

    # the job log carries the driver's progress lines and the actor's forwarded ones
    expected = ["ray: 2 node(s), 3 CPUs, 1 GPUs", "pretrain: epoch 1 ", "[encode] 3/3, 0 failed",
                "[decode] 3/3, 0 failed", f"summary: s3://{run}/summary/summary.parquet",
                "report: "]
    if timings["pretrain"]["device"] == "cpu":  # Ray handed it the fake GPU; torch sees none
        expected.append("encoder: Ray gave this actor GPU [")
    missing = [line for line in expected if line not in logs]
    assert not missing, f"not in the job log: {missing}\n{logs[-8000:]}"
    assert "runs on CPU with" not in logs  # the cluster has a GPU: auto took it


def test_local_store_on_multinode_cluster_is_refused(ray_cluster: LocalCluster, caravan_dir,
                                                     caravan_config, tmp_path) -> None:
    store = tmp_path / "store"
    cfg = caravan_config(caravan_dir.resolve(), GAUGES[:1], store=str(store), run_id="local",
                         epochs=1, resources={"executor": "ray"})
    status, logs = _run_job(ray_cluster, _working_dir(tmp_path / "job", cfg), timeout=120)
    assert status == "FAILED", logs[-4000:]
    # the job's driver joins the cluster through RAY_ADDRESS, set by the job server
    assert f"error: store {store}/local is a local path but the run joins a Ray cluster " \
           "(RAY_ADDRESS=" in logs, logs[-4000:]
    assert "use an s3:// store, or set resources.shared_filesystem: true" in logs, logs[-4000:]
    assert not store.exists()  # refused before anything was prepared into it
