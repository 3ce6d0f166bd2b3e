"""The Ray edge: where units of work run, never what they compute.

``RayExecutor`` runs the runner's plain functions (``hybrid.execution.runner``) on a Ray cluster:

* "worker" work (encoding, decoders, baselines) as one task per catchment with the stage's
  resources, the run context put in the object store once and shared by reference; a worker
  process keeps what ``setup`` built (a loaded encoder) for the next catchments it gets;
* "encoder" work (pre-training through ``call``, and ``hybrid predict``) on *hosts*: actors
  that run ``setup`` once and then serve catchments, on the GPU node when the cluster has one.

Ray's own exceptions are turned back into the user's: a project error raised remotely is one
line again, not a remote traceback.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from hybrid.config import Config
from hybrid.errors import HybridError, StoreError
from hybrid.execution.context import Context
from hybrid.execution.executors import Setup, Work
from hybrid.logs import logger
from hybrid.store.storage import Store

log = logger()


def connect(cfg: Config) -> None:
    """Join the cluster named by config or RAY_ADDRESS, else start a local one."""
    if ray.is_initialized():
        return
    address = cfg.resources.cluster_address()
    # The driver's package must be importable on every worker; a local cluster and an
    # installed package need nothing, a job submitted with --working-dir ships the code.
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local" always starts a fresh instance; a bare ray.init() would attach to whatever
        # cluster `ray start` last left running on this machine. Ray lowers its workers'
        # priority (niceness 15) by default, so on a machine with any other load the training
        # actor crawls; a private instance exists for this run alone, so its workers run at the
        # driver's priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    resources = ray.cluster_resources()
    log.info(f"ray: {len(alive_nodes())} node(s), {resources.get('CPU', 0):.0f} CPUs, "
             f"{resources.get('GPU', 0):.0f} GPUs")


def joined_cluster(cfg: Config) -> bool:
    """Whether the run goes to an existing cluster (which may have several nodes)."""
    return cfg.resources.cluster_address() is not None


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def check_store_reachable(cfg: Config, store: Store) -> None:
    """Object storage is the only shared disk: a local store only works on one node.

    A run that joins a cluster (an address) is refused whatever the node count: on an
    autoscaling cluster only the CPU-less head is up when the job starts, so the nodes that
    would need the store do not exist yet, and the run would fail late, after pre-training.
    """
    if not store.is_local or cfg.resources.shared_filesystem:
        return
    if joined_cluster(cfg):
        address = cfg.resources.address
        named = f"resources.address: {address}" if address else \
            f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS')}"
        where = f"the run joins a Ray cluster ({named}), whose nodes (now or once the " \
            "autoscaler adds them) do not share this disk"
    elif len(alive_nodes()) > 1:
        where = f"the Ray cluster has {len(alive_nodes())} nodes, which do not share this disk"
    else:
        return  # a private local instance: one node
    raise StoreError(
        f"store {store.uri()} is a local path but {where}: use an s3:// store, or set "
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


@dataclass(frozen=True)
class Resources:
    """What one unit of work reserves on the cluster."""

    num_cpus: float = 1
    num_gpus: float = 0
    memory_mb: int = 0
    custom: tuple[tuple[str, float], ...] = ()
    max_retries: int = 3


def encoder_resources(cfg: Config) -> Resources:
    """A GPU when the cluster has (or can launch) one; else the CPUs of the largest node."""
    res = cfg.resources
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = (1.0 if cluster_gpus >= 1 else 0.0) if res.encoder_num_gpus == "auto" \
        else float(res.encoder_num_gpus)
    if res.encoder_num_gpus == "auto" and not gpus and joined_cluster(cfg) \
            and launchable_gpus() >= 1:
        gpus = 1.0
        log.info("encoder: no GPU node is up yet but the autoscaler can add one; the encoder "
                 "actor waits for it")
    if res.encoder_num_cpus == "auto":
        largest = max((n["Resources"].get("CPU", 0) for n in alive_nodes()), default=1)
        cpus = 1.0 if gpus else float(max(1, largest))
    else:
        cpus = float(res.encoder_num_cpus)
    if not gpus:
        log.info("encoder: no GPU requested or none in the cluster; the encoder actor runs on "
                 f"CPU with {cpus:.0f} thread(s)")
    return Resources(num_cpus=cpus, num_gpus=gpus, max_retries=2)


def worker_resources(cfg: Config) -> Resources:
    """Decoder and baseline tasks: CPU only, pinned to a worker type if the config says so."""
    res = cfg.resources
    return Resources(num_cpus=res.decoder_num_cpus, memory_mb=res.decoder_memory_mb,
                     custom=tuple(sorted(res.decoder_custom_resources.items())),
                     max_retries=res.max_retries)


class Host:
    """An actor that keeps per-worker state (a loaded model) between calls.

    Ray re-runs ``__init__`` when it restarts a host after a node loss; the state is rebuilt
    from the store by ``setup``, never from driver memory.
    """

    def __init__(self, threads: int) -> None:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(max(1, threads))
        torch.set_num_threads(max(1, threads))
        self.states: dict[str, dict] = {}
        gpus = ray.get_gpu_ids()
        if gpus and not torch.cuda.is_available():
            log.info(f"encoder: Ray gave this actor GPU {gpus} but torch {torch.__version__} "
                     "sees no CUDA device (a CPU-only build?); it runs on CPU")

    def call(self, fn: Callable[[Context], Any], context: Context) -> tuple[Any, dict]:
        return fn(context), self.where()

    def run(self, work: Work, setup: Setup | None, context: Context, item: str) -> Any:
        key = f"{getattr(setup, '__module__', '')}.{getattr(setup, '__qualname__', '')}"
        if key not in self.states:
            state = setup(context) if setup else {}
            state["node_id"] = node_id()
            self.states[key] = state
        return work(context, self.states[key], item)

    def where(self) -> dict:
        import torch

        return {"node_id": node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "threads": torch.get_num_threads()}


#: per worker process: the state ``setup`` built for the stage being run (a loaded model),
#: so a task that lands on a warm worker does not rebuild it; the newest few stages are kept
_STATES: dict[str, dict] = {}


def _run_item(work: Work, setup: Setup | None, token: str, context: Context, item: str) -> Any:
    state = _STATES.get(token)
    if state is None:
        state = {**(setup(context) if setup else {}), "node_id": node_id()}
        while len(_STATES) >= 4:
            _STATES.pop(next(iter(_STATES)))
        _STATES[token] = state
    return work(context, state, item)


def ray_options(resources: Resources) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_mb:
        options["memory"] = resources.memory_mb * 1024 * 1024
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return options


class RayExecutor:
    """The runner's executor on a Ray cluster (see the module docstring)."""

    def __init__(self, cfg: Config, store: Store) -> None:
        connect(cfg)
        check_store_reachable(cfg, store)
        self.cfg = cfg
        self._hosts: dict[Resources, Any] = {}
        self._roles: dict[str, Resources] = {}

    def resources(self, role: str) -> Resources:
        if role not in self._roles:
            self._roles[role] = encoder_resources(self.cfg) if role == "encoder" \
                else worker_resources(self.cfg)
        return self._roles[role]

    # ------------------------------------------------------------------ hosts
    def host(self, resources: Resources):
        if resources not in self._hosts:
            actor = ray.remote(Host).options(**ray_options(resources), max_restarts=2,
                                             max_task_retries=resources.max_retries)
            self._hosts[resources] = actor.remote(int(max(1, resources.num_cpus)))
            if resources.num_gpus:
                self._wait_for_gpu(resources)
        return self._hosts[resources]

    def _wait_for_gpu(self, resources: Resources) -> None:
        """A GPU host starts once a node with a free GPU is there (an autoscaler may have to
        add it); give up after ``resources.gpu_wait_minutes`` rather than wait forever for a
        node that never comes (no GPU quota, no capacity, no GPU node type)."""
        minutes = self.cfg.resources.gpu_wait_minutes
        if ray.available_resources().get("GPU", 0) < resources.num_gpus:
            log.info(f"encoder: waiting up to {minutes:g} min (resources.gpu_wait_minutes) for "
                     "a node with a free GPU")
        host = self._hosts[resources]
        ready, _ = ray.wait([host.where.remote()], timeout=minutes * 60)
        if ready:
            return
        ray.kill(host)  # else its request would keep the autoscaler launching GPU nodes
        del self._hosts[resources]
        raise HybridError(
            f"encoder: no node with a free GPU joined the Ray cluster within "
            f"resources.gpu_wait_minutes ({minutes:g} min) for the encoder actor "
            f"({resources.num_gpus:g} GPU): check that the cluster can start its GPU node (node "
            "type, the account's GPU instance quota, `ray status`), raise "
            "resources.gpu_wait_minutes, or set resources.encoder_num_gpus: 0 to train on CPU")

    def call(self, fn: Callable[[Context], Any], context: Context, role: str
             ) -> tuple[Any, dict]:
        """``fn(context)`` on the host of ``role``; (its result, where it ran)."""
        return get(self.host(self.resources(role)).call.remote(fn, context))

    def close(self) -> None:
        """Free the hosts' CPUs and GPUs (for the decoders, or the next attempt)."""
        for actor in self._hosts.values():
            ray.kill(actor)
        self._hosts.clear()

    # ------------------------------------------------------------------ fan-out
    def in_flight(self, items: int) -> int:
        """Tasks submitted at once: all of them unless the config bounds it, so that an
        autoscaler sees the whole queue (and grows to it) instead of a window of twice the CPUs
        that happened to be up when the stage started."""
        return self.cfg.resources.max_in_flight or max(1, items)

    def map(self, work: Work, setup: Setup | None, context: Context, items: list[str],
            role: str) -> Iterator[tuple[str, Any, BaseException | None]]:
        resources = self.resources(role)
        shared = ray.put(context)  # once per stage, shared by every task by reference
        if role == "encoder":
            # the host that pre-trained (on the GPU node when there is one) serves the stage
            host = self.host(resources)
            limit = self.cfg.resources.encode_in_flight
            submit = lambda item: host.run.remote(work, setup, shared, item)  # noqa: E731
        else:
            # hosts hold their CPUs (the whole largest node, without a GPU) while they live:
            # give them back before tasks need the same cores
            self.close()
            task = ray.remote(_run_item).options(**ray_options(resources),
                                                 max_retries=resources.max_retries,
                                                 retry_exceptions=False)
            limit = self.in_flight(len(items))
            token = uuid.uuid4().hex
            submit = lambda item: task.remote(work, setup, token, shared, item)  # noqa: E731
        yield from bounded(submit, items, limit)


#: finished calls are looked for among the oldest this many in flight: a wait over every one
#: of 10,000 queued calls per harvest made the driver's cost grow with the square of the queue
#: (15 ms per catchment at 10,000, BENCHMARKS.md section 7); the oldest are the ones running
WAIT_WINDOW = 512


def bounded(submit: Callable[[str], ray.ObjectRef], items: list[str], limit: int
            ) -> Iterator[tuple[str, Any, BaseException | None]]:
    """Keep at most ``limit`` calls in flight; yield ``(item, result, error)`` as they finish."""
    pending: dict[ray.ObjectRef, str] = {}
    queue = iter(items)
    while True:
        while len(pending) < limit:
            item = next(queue, None)
            if item is None:
                break
            pending[submit(item)] = item
        if not pending:
            return
        # take every finished call at once: one wait per batch, not per call, keeps the
        # driver's cost flat for 10,000 catchments in flight
        refs = list(itertools.islice(pending, WAIT_WINDOW))  # in submission order
        ready, _ = ray.wait(refs, num_returns=1)
        if len(refs) > 1:
            more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        for ref in ready:
            item = pending.pop(ref)
            try:
                result, error = ray.get(ref), None
            except Exception as err:  # noqa: BLE001 - the runner's failure policy decides
                result, error = None, cause(err)
            yield item, result, error


def cause(err: BaseException) -> BaseException:
    """The user's exception inside a ``RayTaskError``, so it is reported as itself."""
    inner = getattr(err, "cause", None)
    return inner if isinstance(inner, BaseException) else err


def get(ref) -> Any:
    """``ray.get`` that re-raises a remote project error as itself (one line, no traceback)."""
    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001
        raise cause(err) from None
