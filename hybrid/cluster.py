"""The Ray edge: where stages run, never what they compute.

Everything here wraps plain functions from the stage modules: an actor that hosts training and
encoding (on a GPU node when the cluster has one), and a bounded fan-out of decoder tasks on CPU
nodes. Remote code receives only the store URL and options, and reads the run's config and data
from the store, so a restarted actor or a retried task on another node sees the same inputs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ray

from hybrid.config import Config
from hybrid.errors import StoreError
from hybrid.progress import Progress, log
from hybrid.storage import Store


def connect(cfg: Config) -> None:
    """Join the cluster named by config or RAY_ADDRESS, else start a local one."""
    if ray.is_initialized():
        return
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    # The driver's package must be importable on every worker; a local cluster and an
    # installed package need nothing, a job submitted with --working-dir ships the code.
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local" always starts a fresh instance; a bare ray.init() would attach to whatever
        # cluster `ray start` last left running on this machine.
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    resources = ray.cluster_resources()
    log(f"ray: {len(alive_nodes())} node(s), {resources.get('CPU', 0):.0f} CPUs, "
        f"{resources.get('GPU', 0):.0f} GPUs")


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def check_store_reachable(cfg: Config, store: Store) -> None:
    """Object storage is the only shared disk: a local store only works on one node."""
    if store.is_local and len(alive_nodes()) > 1 and not cfg.resources.shared_filesystem:
        raise StoreError(
            f"store {store.uri()} is a local path but the Ray cluster has "
            f"{len(alive_nodes())} nodes: use an s3:// store, or set "
            "resources.shared_filesystem: true if that path is on a filesystem all nodes share")


#: the cluster launcher's config on the head node, where `ray job submit` runs the driver
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def launchable_gpus() -> float:
    """GPUs the autoscaler could add, for "auto" on a cluster whose GPU nodes start at zero.

    Ray gives a driver no public view of the autoscaler's node types. Two places hold them: the
    cluster config an autoscaler reports to the GCS (read the way Ray Train and Ray Data do;
    the Ray 2.60 autoscalers do not report it yet, newer ones do), and the cluster launcher's
    config file on the head node (Ray Tune checks the same file). 0 when neither says.
    """
    try:
        from ray._private.state import state

        gcs = (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0)
        if gcs:
            return float(gcs)
    except Exception:  # noqa: BLE001 - a private API: absent or changed means "unknown"
        pass
    try:
        import yaml

        path = os.path.expanduser(BOOTSTRAP_CONFIG)
        if not os.path.isfile(path):
            return 0.0
        with open(path) as f:
            launcher = yaml.safe_load(f) or {}
        if not launcher.get("max_workers", 1):
            return 0.0
        head = launcher.get("head_node_type")
        return float(sum(
            (t.get("resources") or {}).get("GPU", 0) * t.get("max_workers", 0)
            for name, t in (launcher.get("available_node_types") or {}).items()
            if name != head))
    except Exception:  # noqa: BLE001 - an unreadable file means "unknown", not a failed run
        return 0.0


def encoder_options(cfg: Config) -> dict[str, Any]:
    res = cfg.resources
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = (1.0 if cluster_gpus >= 1 else 0.0) if res.encoder_num_gpus == "auto" \
        else float(res.encoder_num_gpus)
    joined = bool(res.address or os.environ.get("RAY_ADDRESS"))  # a private local Ray never grows
    if res.encoder_num_gpus == "auto" and not gpus and joined and launchable_gpus() >= 1:
        gpus = 1.0
        log("encoder: no GPU node is up yet but the autoscaler can add one; the encoder actor "
            "waits for it")
    if res.encoder_num_cpus == "auto":
        largest = max((n["Resources"].get("CPU", 0) for n in alive_nodes()), default=1)
        cpus = 1.0 if gpus else float(max(1, largest))
    else:
        cpus = float(res.encoder_num_cpus)
    if not gpus:
        log("encoder: no GPU requested or none in the cluster; the encoder actor runs on CPU "
            f"with {cpus:.0f} thread(s)")
    return {"num_gpus": gpus, "num_cpus": cpus}


class EncoderActor:
    """Pre-trains the regional LSTM, then serves ``encode(gauge_id)`` requests.

    Its state is reloaded from the store in ``__init__``: when Ray restarts the actor (node
    loss), it resumes from the last epoch checkpoint or the final model, not from driver memory.
    """

    def __init__(self, store_url: str, storage_options: dict, num_threads: int) -> None:
        import torch

        from hybrid.checkpoints import FINAL, load_trained
        from hybrid.runs import load_run_config
        from hybrid.training import pick_device

        torch.set_num_threads(max(1, num_threads))
        self.store = Store(store_url, storage_options)
        self.cfg = load_run_config(self.store)
        self.device = pick_device(self.cfg.device)
        if ray.is_initialized() and ray.get_gpu_ids() and self.device == "cpu":
            why = "the config says device: cpu" if self.cfg.device == "cpu" else \
                f"torch {torch.__version__} sees no CUDA device (a CPU-only build?)"
            log(f"encoder: Ray gave this actor GPU {ray.get_gpu_ids()} but it runs on CPU: {why}")
        self.trained = load_trained(self.store, self.device) if self.store.exists(FINAL) \
            else None
        self._encoder = None

    def info(self) -> dict:
        import torch

        return {"node_id": node_id(), "device": self.device,
                "threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(0) if self.device == "cuda" else ""}

    def pretrain(self) -> dict:
        from hybrid.training import train_regional

        started = time.monotonic()
        self.trained = train_regional(self.store, self.cfg, self.device)
        self._encoder = None
        return {**self.info(), "best_epoch": self.trained.best_epoch,
                "seconds": time.monotonic() - started}

    def encode(self, gauge_id: str) -> dict:
        from hybrid.encode import CatchmentEncoder

        if self.trained is None:
            raise StoreError("the encoder has no trained model: run `hybrid pretrain` first")
        if self._encoder is None:
            self._encoder = CatchmentEncoder(self.store, self.cfg, self.trained, self.device)
        return {**self._encoder(gauge_id), "node_id": node_id()}


def start_encoder(cfg: Config, store: Store):
    options = encoder_options(cfg)
    actor_cls = ray.remote(EncoderActor).options(
        **options, max_restarts=2, max_task_retries=2, name=None)
    return actor_cls.remote(store.url, store.storage_options, int(options["num_cpus"]))


def bounded_map(submit: Callable[[str], ray.ObjectRef], keys: Iterable[str], max_in_flight: int,
                desc: str, total: int) -> Iterator[tuple[str, Any, BaseException | None]]:
    """Submit one call per key, keeping at most ``max_in_flight`` running; yield as they finish.

    Bounding the queue keeps the driver's memory and the object store flat for any number of
    catchments, and lets the progress bar show real throughput instead of a submission burst.
    """
    pending: dict[ray.ObjectRef, str] = {}
    keys = iter(keys)
    with Progress(total, desc) as bar:
        while True:
            while len(pending) < max_in_flight:
                key = next(keys, None)
                if key is None:
                    break
                pending[submit(key)] = key
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    result, error = ray.get(ref), None
                except Exception as err:  # noqa: BLE001 - recorded per catchment, run goes on
                    result, error = None, _cause(err)
                bar.update(failed=int(error is not None))
                yield key, result, error


def _cause(err: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError, for a readable one-line record."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def default_in_flight(cfg: Config) -> int:
    if cfg.resources.max_in_flight:
        return cfg.resources.max_in_flight
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(2, int(2 * cpus // max(1, cfg.resources.decoder_num_cpus)))


def _decode_entry(store_url: str, storage_options: dict, gauge_id: str, in_training: bool,
                  n_jobs: int):
    from hybrid.decode import decode_catchment
    from hybrid.runs import load_run_config

    store = Store(store_url, storage_options)
    cfg = load_run_config(store)
    return decode_catchment(store, cfg, gauge_id, in_training, n_jobs,
                            extra={"node_id": node_id()})


def decoder_task(cfg: Config):
    res = cfg.resources
    options: dict[str, Any] = {"num_cpus": res.decoder_num_cpus, "num_gpus": 0,
                               "max_retries": res.max_retries, "retry_exceptions": False}
    if res.decoder_memory_mb:
        options["memory"] = res.decoder_memory_mb * 1024 * 1024
    if res.decoder_custom_resources:
        options["resources"] = dict(res.decoder_custom_resources)
    return ray.remote(_decode_entry).options(**options)


def _baseline_entry(store_url: str, storage_options: dict, gauge_id: str) -> dict:
    from hybrid.baselines import train_catchment_wise
    from hybrid.runs import load_run_config

    store = Store(store_url, storage_options)
    result = train_catchment_wise(store, load_run_config(store), gauge_id)
    return {**result, "node_id": node_id()}


def baseline_task(cfg: Config):
    """Catchment-wise LSTMs share the decoders' CPU placement (they are CPU-sized models)."""
    res = cfg.resources
    options: dict[str, Any] = {"num_cpus": res.decoder_num_cpus, "num_gpus": 0,
                               "max_retries": res.max_retries}
    if res.decoder_custom_resources:
        options["resources"] = dict(res.decoder_custom_resources)
    return ray.remote(_baseline_entry).options(**options)
