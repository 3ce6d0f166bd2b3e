"""The deployment files: the cluster launcher config, the KubeRay RayJob, the image, the scripts.

Nothing here starts a cluster or builds an image; the files are checked against the schemas the
tools themselves apply (the launcher schema shipped with Ray, Ray's own config preparation, the
RayJob CRD of KubeRay) and against the shape the pipeline relies on: a head that runs no work, one
GPU node for the encoder actor, many CPU (spot) nodes for the decoder tasks, each on an image and
a torch build of its own kind.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "ray_cluster.yaml"
RAYJOB_YAML = REPO / "infra" / "kuberay-rayjob.yaml"
DOCKERFILE = REPO / "infra" / "Dockerfile"
DOCKERIGNORE = REPO / "infra" / "Dockerfile.dockerignore"
CONSTRAINTS = REPO / "infra" / "constraints.txt"
HEAD_POLICY = REPO / "infra" / "aws-head-policy.json"
WORKER_POLICY = REPO / "infra" / "aws-worker-policy.json"
LOCAL_SCRIPTS = sorted((REPO / "infra" / "local").glob("*.sh"))
RAY_VERSION = "2.60.0"


def _pins() -> dict[str, str]:
    """infra/constraints.txt as {normalized name: version}."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


# ------------------------------------------------------------------ ray_cluster.yaml
@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    ray = pytest.importorskip("ray")
    path = Path(os.path.dirname(ray.__file__)) / "autoscaler" / "ray-schema.json"
    if not path.is_file():
        pytest.skip(f"the cluster launcher's JSON schema is not shipped with this ray: {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def launcher(cluster):
    """The config as the head's autoscaler (v2, Ray's default) reads it, per node type."""
    config = pytest.importorskip("ray.autoscaler.v2.instance_manager.config")
    return config.AutoscalingConfig(copy.deepcopy(cluster), skip_content_hash=True)


def test_cluster_yaml_matches_rays_schema(cluster, ray_schema):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    jsonschema.validate(cluster, ray_schema)


def test_cluster_yaml_passes_rays_own_validation(cluster):
    """What ``ray up`` does before launching anything: fill defaults, then validate."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    filled = util.prepare_config(copy.deepcopy(cluster))
    util.validate_config(filled)
    assert filled["head_node_type"] in filled["available_node_types"]


def _node_types(cluster: dict) -> dict:
    return cluster["available_node_types"]


def _head(cluster: dict) -> dict:
    return _node_types(cluster)[cluster["head_node_type"]]


def _workers(cluster: dict) -> dict:
    return {k: v for k, v in _node_types(cluster).items() if k != cluster["head_node_type"]}


def _gpu_types(cluster: dict) -> dict:
    return {k: v for k, v in _workers(cluster).items() if v["resources"].get("GPU", 0) > 0}


def _cpu_types(cluster: dict) -> dict:
    return {k: v for k, v in _workers(cluster).items() if not v["resources"].get("GPU")}


def test_head_runs_no_work(cluster):
    head = _head(cluster)
    assert head["resources"].get("CPU") == 0
    assert not head["resources"].get("GPU")


def test_one_gpu_worker_type_for_the_encoder(cluster):
    gpu_types = _gpu_types(cluster)
    assert len(gpu_types) == 1, gpu_types
    (gpu,) = gpu_types.values()
    assert gpu["resources"]["GPU"] >= 1
    assert gpu.get("min_workers", 0) == 0
    assert gpu["max_workers"] == 1


def test_cpu_worker_types_for_the_decoders_on_spot(cluster):
    """Several spot instance types of one shape, so that a type without capacity costs only its
    share of the nodes (the AWS provider takes one InstanceType per node type)."""
    cpu_types = _cpu_types(cluster)
    assert len(cpu_types) >= 3, cpu_types
    instance_types = [t["node_config"]["InstanceType"] for t in cpu_types.values()]
    assert len(set(instance_types)) == len(instance_types), instance_types
    shapes = {json.dumps(t["resources"], sort_keys=True) for t in cpu_types.values()}
    assert len(shapes) == 1, "same resources, so the autoscaler can use them interchangeably"
    priorities = [t.get("priority", 0) for t in cpu_types.values()]
    assert len(set(priorities)) == len(priorities), "an explicit order, not the file's"
    for name, node_type in cpu_types.items():
        assert node_type["resources"]["CPU"] >= 1, name
        assert node_type.get("min_workers", 0) == 0, name
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
    assert sum(t["max_workers"] for t in cpu_types.values()) >= 40


def _v2_launches(cluster: dict, cpus: int) -> dict[str, int]:
    """The nodes autoscaler v2 (Ray's own scheduler) launches for ``cpus`` one-CPU tasks on an
    empty cluster of this config."""
    scheduler = pytest.importorskip("ray.autoscaler.v2.scheduler")
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
    from ray.autoscaler.v2.utils import ResourceRequestUtil
    from ray.core.generated.autoscaler_pb2 import ResourceRequestByCount

    config = AutoscalingConfig(copy.deepcopy(cluster), skip_content_hash=True)
    request = scheduler.SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=config.get_node_type_configs(),
        max_num_nodes=config.get_max_num_nodes(),
        resource_requests=[ResourceRequestByCount(
            request=ResourceRequestUtil.make({"CPU": 1}), count=cpus)])
    reply = scheduler.ResourceDemandScheduler(None).schedule(request)
    return {launch.instance_type: launch.count for launch in reply.to_launch}


def _v1_launches(cluster: dict, cpus: int) -> dict[str, int]:
    """The same with autoscaler v1's scheduler (`ray up` with RAY_UP_enable_autoscaler_v2=0)."""
    v1 = pytest.importorskip("ray.autoscaler._private.resource_demand_scheduler")
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary,
    )

    scorer = functools.partial(v1._default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary({}))
    nodes, _ = v1.get_nodes_for(copy.deepcopy(cluster["available_node_types"]), {},
                                cluster["head_node_type"], cluster["max_workers"],
                                [{"CPU": 1}] * cpus, scorer)
    return dict(nodes)


def test_cpu_types_are_launched_in_priority_order(cluster):
    """The order the file documents (c7i, c6i, c6a, c5), as autoscaler v2 applies it: one task
    takes a node of the first type, 25 nodes' worth fill the first two types and half the
    third; and the documented remedy for a type without spot capacity, lowering its priority,
    moves the work to the next type."""
    cpu_types = _cpu_types(cluster)
    order = sorted(cpu_types, key=lambda name: -cpu_types[name]["priority"])
    assert [cpu_types[n]["node_config"]["InstanceType"].split(".")[0] for n in order] == \
        ["c7i", "c6i", "c6a", "c5"]
    per_node = int(cpu_types[order[0]]["resources"]["CPU"])
    assert _v2_launches(cluster, 1) == {order[0]: 1}
    assert _v2_launches(cluster, 25 * per_node) == {order[0]: 10, order[1]: 10, order[2]: 5}
    lowered = copy.deepcopy(cluster)
    lowered["available_node_types"][order[0]]["priority"] = 0
    assert _v2_launches(lowered, 1) == {order[1]: 1}


def test_the_head_starts_only_under_autoscaler_v2(cluster, launcher):
    """Autoscaler v1 ignores `priority` (lowering it changes nothing there), so the head's first
    start command refuses to go on unless `ray up` switched v2 on, which it does by putting
    exports in front of every head start command (Ray >= 2.50, unless
    RAY_UP_enable_autoscaler_v2=0)."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    lowered = copy.deepcopy(cluster)
    first = max(_cpu_types(cluster), key=lambda name: _cpu_types(cluster)[name]["priority"])
    lowered["available_node_types"][first]["priority"] = 0
    assert _v1_launches(lowered, 1) == _v1_launches(cluster, 1) == {first: 1}

    commands = launcher.get_config("head_start_ray_commands")
    assert any("ray start --head" in c for c in commands)
    guard = commands[0]
    # checked before it runs here: nothing but this test may run on this machine
    assert guard.startswith('test "${RAY_enable_autoscaler_v2:-0}" = 1 ||'), guard
    assert "ray stop" not in guard and "ray start" not in guard, guard
    bash = shutil.which("bash") or pytest.skip("bash not found")
    env = {"PATH": os.environ.get("PATH", "")}
    v2 = util.with_envs([guard], {"RAY_enable_autoscaler_v2": "1",
                                  "RAY_CLOUD_INSTANCE_ID": "i-0123", "RAY_NODE_TYPE_NAME": "head"})
    assert subprocess.run([bash, "-c", v2[0]], env=env).returncode == 0
    v1 = subprocess.run([bash, "-c", guard], env=env, capture_output=True, text=True)
    assert v1.returncode != 0
    assert v1.stderr.count("\n") == 1 and "RAY_UP_enable_autoscaler_v2=1" in v1.stderr, v1.stderr
    assert "RAY_UP_enable_autoscaler_v2=1 ray up ray_cluster.yaml" in CLUSTER_YAML.read_text()


def test_cluster_limits_add_up(cluster):
    assert cluster["cluster_name"] == "hybrid"
    assert cluster["provider"]["type"] == "aws"
    assert sum(w["max_workers"] for w in _workers(cluster).values()) <= cluster["max_workers"]
    assert cluster["idle_timeout_minutes"] > 0


def test_every_node_type_pins_its_ami(cluster):
    """Without ImageId Ray falls back to an Ubuntu 18.04 Deep Learning AMI (CUDA 11)."""
    amis = {name: t["node_config"].get("ImageId", "") for name, t in _node_types(cluster).items()}
    for name, ami in amis.items():
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", ami), (name, ami)
    (gpu_name,) = _gpu_types(cluster)
    cpu_amis = {ami for name, ami in amis.items() if name != gpu_name}
    assert len(cpu_amis) == 1 and amis[gpu_name] not in cpu_amis
    text = CLUSTER_YAML.read_text()
    ami_lines = [line for line in text.splitlines() if re.search(r"ImageId: &", line)]
    assert len(ami_lines) == 2 and all("CHANGE" in line for line in ami_lines), ami_lines
    # how to find the current ids for a region (AWS's public SSM parameters)
    assert "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/" in text
    assert "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/" in text
    # the plain Ubuntu AMI has no Docker: the launcher's host-side commands must bring it
    init = "\n".join(cluster["initialization_commands"])
    assert "command -v docker" in init and "docker.io" in init


def _profile_arn(node_type: dict) -> str:
    return node_type["node_config"]["IamInstanceProfile"]["Arn"]


def test_workers_can_reach_s3(cluster):
    """Ray gives only the head an instance profile by default; decoder tasks read/write S3."""
    head_profile = _profile_arn(_head(cluster))
    for name, node_type in _workers(cluster).items():
        assert _profile_arn(node_type) != head_profile, name


def _statements(policy: dict, action: str) -> list[dict]:
    def actions(statement):
        value = statement["Action"]
        return [value] if isinstance(value, str) else value

    return [s for s in policy["Statement"] if s["Effect"] == "Allow" and action in actions(s)]


def test_head_has_its_own_profile_that_may_pass_the_worker_role(cluster):
    """Ray's default head role ("ray-autoscaler-v1": EC2 + S3 full access) lacks iam:PassRole,
    so it cannot launch a worker that carries an instance profile."""
    head_profile = _profile_arn(_head(cluster))
    assert "ray-autoscaler" not in head_profile
    (worker_profile,) = {_profile_arn(t) for t in _workers(cluster).values()}
    # role and instance profile share their name (infra/README.md creates them so)
    account, name = re.fullmatch(
        r"arn:aws:iam::(\d{12}):instance-profile/([\w+=,.@-]+)", worker_profile).groups()
    worker_role = f"arn:aws:iam::{account}:role/{name}"

    policy = json.loads(HEAD_POLICY.read_text())
    (pass_role,) = _statements(policy, "iam:PassRole")
    assert pass_role["Resource"] == worker_role
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    for action in ("ec2:RunInstances", "ec2:DescribeInstances", "ec2:TerminateInstances",
                   "ec2:CreateTags"):
        assert _statements(policy, action), action
    # terminating is limited to this cluster's instances, by the tag Ray puts on them
    (terminate,) = _statements(policy, "ec2:TerminateInstances")
    tags = terminate["Condition"]["StringEquals"]
    assert tags["aws:ResourceTag/ray-cluster-name"] == cluster["cluster_name"]
    # the driver runs on the head and the decoders on the workers: both reach the run store
    for path in (HEAD_POLICY, WORKER_POLICY):
        assert _statements(json.loads(path.read_text()), "s3:PutObject"), path.name
    assert "aws-head-policy.json" in CLUSTER_YAML.read_text()


#: a private ECR repository: <account>.dkr.ecr.<region>.amazonaws.com/hybrid:<version>-<cpu|gpu>
ECR_IMAGE = re.compile(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/hybrid:(.+)-(cpu|gpu)")


def _package_version() -> str:
    tomllib = pytest.importorskip("tomllib")
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def _image_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if re.match(r"\s*(image|worker_image):", line)]


def test_each_node_type_runs_the_image_of_its_kind(cluster, launcher):
    """The project's image from a private registry (ECR), not Docker Hub: anonymous pulls from
    there are limited per IP address, which a 40-node spot fleet behind one NAT exceeds."""
    gpu_types = _gpu_types(cluster)
    registries = set()
    for name in _node_types(cluster):
        image = launcher.get_docker_config(name)["image"]
        match = ECR_IMAGE.fullmatch(image)
        assert match, (name, image)
        account, region, version, kind = match.groups()
        assert kind == ("gpu" if name in gpu_types else "cpu"), (name, image)
        assert version == _package_version(), (name, image)
        assert region == cluster["provider"]["region"], (name, image)
        registries.add((account, region))
    assert len(registries) == 1, registries
    lines = _image_lines(CLUSTER_YAML)
    assert len(lines) == 2 and all("CHANGE" in line for line in lines), lines


def test_no_node_installs_anything_at_start_up(cluster, launcher):
    """The images hold torch, the package and its dependencies: a spot node that pip-installs
    at start-up costs minutes each time and fails when PyPI or the PyTorch index does."""
    for name in _node_types(cluster):
        commands = launcher.get_head_setup_commands() if name == cluster["head_node_type"] \
            else launcher.get_worker_setup_commands(name)
        assert commands == [], (name, commands)
    assert "/home/ray/hybrid" not in cluster["file_mounts"]  # nothing to install from


def test_nodes_log_in_to_the_image_registry(cluster, launcher):
    """`docker pull` from ECR needs credentials: the ECR credential helper, registered for the
    images' registry, and both node roles allowed to pull from that repository."""
    image = launcher.get_docker_config(cluster["head_node_type"])["image"]
    account, region, _, _ = ECR_IMAGE.fullmatch(image).groups()
    registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
    init = "\n".join(cluster["initialization_commands"])
    assert "amazon-ecr-credential-helper" in init and "docker-credential-ecr-login" in init
    (docker_config,) = re.findall(r"echo '(\{.*\})' > ~/\.docker/config\.json", init)
    assert json.loads(docker_config) == {"credHelpers": {registry: "ecr-login"}}
    repository = f"arn:aws:ecr:{region}:{account}:repository/hybrid"
    for path in (HEAD_POLICY, WORKER_POLICY):
        policy = json.loads(path.read_text())
        (login,) = _statements(policy, "ecr:GetAuthorizationToken")
        assert login["Resource"] == "*", path.name  # the token call has no resource of its own
        for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                       "ecr:BatchCheckLayerAvailability"):
            (pull,) = _statements(policy, action)
            assert pull["Resource"] == repository, (path.name, action)


def test_cluster_uses_token_authentication(cluster):
    env = " ".join(cluster["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in env
    token_path = env.split("RAY_AUTH_TOKEN_PATH=")[1].split()[0]
    assert token_path in cluster["file_mounts"], "the token file must be shipped to every node"


# ------------------------------------------------------------------ infra/kuberay-rayjob.yaml
@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]


def _kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def _by_name(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _kind(docs, kind)}


@pytest.fixture(scope="module")
def rayjob(k8s_docs) -> dict:
    (job,) = _kind(k8s_docs, "RayJob")
    return job


def _groups(rayjob: dict) -> dict[str, dict]:
    """Head and worker groups by name ("head" for the head group)."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster["workerGroupSpecs"]})
    return groups


def _container(group: dict) -> dict:
    (container,) = group["template"]["spec"]["containers"]
    return container


def _gpus(group: dict) -> int:
    resources = _container(group).get("resources", {})
    return int(resources.get("limits", {}).get("nvidia.com/gpu", 0))


def test_every_manifest_has_the_kubernetes_basics(k8s_docs):
    kinds = sorted(d["kind"] for d in k8s_docs)
    assert kinds == ["ConfigMap", "ConfigMap", "RayJob"]
    for doc in k8s_docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_rayjob_runs_the_pipeline_and_cleans_up(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    assert "--config /config/run.yml" in spec["entrypoint"]
    assert "hybrid.cli run" in spec["entrypoint"] or "run_pipeline.py" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION
    # an unschedulable pod fails the job early instead of after activeDeadlineSeconds
    assert 1 <= spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]


def test_rayjob_head_and_worker_groups(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert _gpus(cluster["headGroupSpec"]) == 0
    groups = cluster["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups) == 2
    gpu = [g for g in groups if _gpus(g) > 0]
    cpu = [g for g in groups if _gpus(g) == 0]
    assert len(gpu) == 1 and len(cpu) == 1
    (gpu,), (cpu,) = gpu, cpu
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 1)
    # the GPU pod starts with the cluster, so preRunningDeadlineSeconds covers its scheduling
    assert gpu["replicas"] == 1
    assert cpu["minReplicas"] == 0 and cpu["maxReplicas"] >= 10
    for group in groups:
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert "rayStartParams" in group


def test_rayjob_pods_run_the_image_of_their_kind_from_the_same_registry(rayjob, cluster):
    """The same images as the cluster launcher's: built from infra/Dockerfile, in ECR."""
    launcher_image = cluster["docker"]["image"]
    for name, group in _groups(rayjob).items():
        image = _container(group)["image"]
        match = ECR_IMAGE.fullmatch(image)
        assert match, (name, image)
        assert match.group(4) == ("gpu" if _gpus(group) else "cpu"), (name, image)
        assert image.rsplit(":", 1)[0] == launcher_image.rsplit(":", 1)[0], (name, image)
        assert match.group(3) == _package_version(), (name, image)
    lines = _image_lines(RAYJOB_YAML)
    assert len(lines) == 3 and all("CHANGE" in line for line in lines), lines


def test_rayjob_token_secret_is_documented_not_shipped(rayjob, k8s_docs):
    """A Secret in the file would put a token in git and overwrite the real one on apply."""
    auth = rayjob["spec"]["rayClusterSpec"]["authOptions"]
    assert auth["mode"] == "token"
    assert not _kind(k8s_docs, "Secret")
    command = f"kubectl create secret generic {auth['secretName']} --from-literal=auth_token="
    assert command in RAYJOB_YAML.read_text()  # auth_token: KubeRay's key name


def test_rayjob_config_map_holds_a_valid_s3_run_config(rayjob, k8s_docs, tmp_path):
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    config_maps = _by_name(k8s_docs, "ConfigMap")
    (volume,) = [v for v in head["volumes"] if v.get("configMap", {}).get("name") in config_maps]
    config_map = config_maps[volume["configMap"]["name"]]
    assert mounts[volume["name"]] == "/config" and "run.yml" in config_map["data"]
    run = yaml.safe_load(config_map["data"]["run.yml"])
    assert run["store"].startswith("s3://")
    # the package's own loader accepts it (every key known, every value the right type)
    config = pytest.importorskip("hybrid.config")
    path = tmp_path / "run.yml"
    path.write_text(config_map["data"]["run.yml"])
    cfg = config.load_config(path)
    assert cfg.resources.encoder_num_gpus == 1  # the autoscaler may remove the GPU pod


def test_rayjob_pods_get_the_region_and_an_optional_s3_endpoint(rayjob, k8s_docs):
    config_maps = _by_name(k8s_docs, "ConfigMap")
    for name, group in _groups(rayjob).items():
        refs = [e["configMapRef"]["name"] for e in _container(group).get("envFrom", [])
                if "configMapRef" in e]
        env = {}
        for ref in refs:
            env.update(config_maps[ref]["data"])
        # botocore (s3fs) reads AWS_DEFAULT_REGION, pyarrow's AWS SDK reads AWS_REGION
        assert env.get("AWS_REGION") and env["AWS_REGION"] == env.get("AWS_DEFAULT_REGION"), name
        # an empty endpoint would be worse than none: it is left out unless a store needs it
        assert env.get("AWS_ENDPOINT_URL", "unset"), name
    assert re.search(r"^\s*# AWS_ENDPOINT_URL: \S+", RAYJOB_YAML.read_text(), re.MULTILINE)


# Allocatable capacity of the node types the manifest is sized for, by EKS's kubelet defaults:
# (vCPU, memory GiB, max pods by ENI limit).
NODES = {"head": ("m5.xlarge", 4, 16, 58), "gpu": ("g5.xlarge", 4, 16, 58),
         "cpu": ("c7i.4xlarge", 16, 32, 234)}
DAEMONSETS = (0.3, 0.5 * 2**30)  # CPU, bytes kept free for kube-proxy, aws-node, CSI, ...
SUBMITTER = (0.5, 200 * 2**20)  # KubeRay's default request for the K8sJobMode submitter pod


def _cpu(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _bytes(quantity) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i)?", str(quantity))
    return float(match.group(1)) * units.get(match.group(2), 1)


def _allocatable(vcpus: int, gib: int, max_pods: int) -> tuple[float, float]:
    reserved_cpu = 0.06 + 0.01 + 0.005 * 2 + 0.0025 * (vcpus - 4)
    capacity = gib * 2**30 * 0.925  # what the OS leaves the kubelet (Karpenter's estimate)
    reserved_memory = (255 + 11 * max_pods + 100) * 2**20  # kube-reserved + eviction
    return vcpus - reserved_cpu, capacity - reserved_memory


@pytest.mark.parametrize("group_name", sorted(NODES))
def test_rayjob_requests_fit_their_nodes(rayjob, group_name):
    instance_type, vcpus, gib, max_pods = NODES[group_name]
    assert instance_type in RAYJOB_YAML.read_text()
    resources = _container(_groups(rayjob)[group_name])["resources"]
    cpu = _cpu(resources["requests"]["cpu"]) + DAEMONSETS[0]
    memory = _bytes(resources["requests"]["memory"]) + DAEMONSETS[1]
    if group_name == "head":  # the autoscaler sidecar, and the submitter if it lands here
        sidecar = rayjob["spec"]["rayClusterSpec"]["autoscalerOptions"]["resources"]["requests"]
        cpu += _cpu(sidecar["cpu"]) + SUBMITTER[0]
        memory += _bytes(sidecar["memory"]) + SUBMITTER[1]
    allocatable_cpu, allocatable_memory = _allocatable(vcpus, gib, max_pods)
    assert cpu <= allocatable_cpu, (group_name, cpu, allocatable_cpu)
    assert memory <= allocatable_memory, (group_name, memory / 2**30, allocatable_memory / 2**30)
    # Ray counts whole CPUs from the limit
    assert float(_cpu(resources["limits"]["cpu"])).is_integer()


def kubernetes_schema(node):
    """An openAPI schema of a CRD as JSON Schema, with the API server's unknown-field check.

    int-or-string becomes anyOf [integer, string] (quantities like 4 and "14Gi"), nullable adds
    null, and objects that list their properties refuse others, as `kubectl apply` does.
    """
    if isinstance(node, list):
        return [kubernetes_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: kubernetes_schema(v) for k, v in node.items()}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


@pytest.fixture(scope="module")
def rayjob_validator(kuberay_crd):
    """The RayJob CRD's v1 schema (found by conftest's ``kuberay_crd``: by default in the shared
    data folder, ``<shared data>/kuberay/``)."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    path = kuberay_crd
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(kubernetes_schema(v1["schema"]["openAPIV3Schema"]))


def test_kubernetes_schema_reads_int_or_string_and_unknown_fields():
    """The pre-pass alone, on a schema of the same form (runs without the CRD)."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    quantity = {"x-kubernetes-int-or-string": True}
    schema = kubernetes_schema({"type": "object", "properties": {
        "limits": {"type": "object", "additionalProperties": quantity},
        "labels": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                   "properties": {"app": {"type": "string"}}},
        "note": {"type": "string", "nullable": True}}})
    validator = jsonschema.Draft7Validator(schema)
    good = {"limits": {"cpu": 4, "memory": "14Gi"}, "labels": {"app": "x", "team": "y"},
            "note": None}
    assert not list(validator.iter_errors(good))
    for bad in ({"limits": {"cpu": [4]}}, {"limit": {}}, {"note": 3}):
        assert list(validator.iter_errors(bad)), bad


def test_the_crd_comes_from_the_shared_data_folder_by_default(kuberay_crd):
    """Where the project keeps it (``<shared data>/kuberay/``), so the CRD tests run, not skip,
    wherever the shared data is."""
    if os.environ.get("HYBRID_KUBERAY_CRD"):
        pytest.skip("HYBRID_KUBERAY_CRD names the file")
    shared = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
    if (shared / "kuberay").is_dir():
        assert kuberay_crd == shared / "kuberay" / "ray.io_rayjobs.yaml"


def test_rayjob_matches_the_kuberay_crd(rayjob, rayjob_validator):
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in rayjob_validator.iter_errors(rayjob)]
    assert not errors, "\n".join(errors)


def _break_rayjob(rayjob: dict, how: str) -> dict:
    job = copy.deepcopy(rayjob)
    spec = job["spec"]
    worker = _container(spec["rayClusterSpec"]["workerGroupSpecs"][0])
    if how == "misspelt spec field":
        spec["preRunningDeadlineSecond"] = spec.pop("preRunningDeadlineSeconds")
    elif how == "misspelt container field":
        worker["resource"] = worker.pop("resources")
    elif how == "wrong type":
        spec["ttlSecondsAfterFinished"] = "300"
    elif how == "quantity not int or string":
        worker["resources"]["limits"]["cpu"] = [4]
    elif how == "unknown auth mode":
        spec["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    elif how == "deadline below minimum":
        spec["preRunningDeadlineSeconds"] = 0
    return job


@pytest.mark.parametrize("how", ["misspelt spec field", "misspelt container field", "wrong type",
                                 "quantity not int or string", "unknown auth mode",
                                 "deadline below minimum"])
def test_the_crd_check_rejects_a_broken_rayjob(rayjob, rayjob_validator, how):
    assert list(rayjob_validator.iter_errors(_break_rayjob(rayjob, how))), how


def test_the_crd_check_accepts_integer_quantities(rayjob, rayjob_validator):
    job = copy.deepcopy(rayjob)
    worker = _container(job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0])
    worker["resources"]["limits"]["cpu"] = 4
    assert not list(rayjob_validator.iter_errors(job))


# ------------------------------------------------------------------ infra/Dockerfile
def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


def _copy_sources(args: str) -> list[str]:
    return [a for a in args.split() if not a.startswith("--")][:-1]


def test_dockerfile_installs_dependencies_before_copying_the_code():
    """Editing the code must not invalidate the dependency layer."""
    steps = _dockerfile_instructions()
    final = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    steps = steps[final:]
    copies = [(i, _copy_sources(args)) for i, (kw, args) in enumerate(steps) if kw == "COPY"]
    (code_at,) = [i for i, sources in copies if sources == ["."]]
    inputs_at = {s: i for i, sources in copies for s in sources if s != "."}
    assert set(inputs_at) == {"pyproject.toml", "infra/constraints.txt"}
    runs = [(i, args) for i, (kw, args) in enumerate(steps) if kw == "RUN"]
    (deps_at,) = [i for i, args in runs if "-c infra/constraints.txt" in args]
    assert max(inputs_at.values()) < deps_at < code_at
    (package_at,) = [i for i, args in runs if i > code_at]
    assert "--no-deps" in steps[package_at][1]
    # the launcher's autoscaler (in the head's container) launches EC2 nodes with boto3
    assert re.search(r"-r /tmp/requirements\.txt boto3\b", steps[deps_at][1])


def test_dockerfile_has_a_cpu_and_a_gpu_variant():
    text = DOCKERFILE.read_text()
    steps = _dockerfile_instructions()
    args = dict(a.partition("=")[::2] for kw, a in steps if kw == "ARG" and "=" in a)
    assert args["RAY_VERSION"] == RAY_VERSION
    assert args["TORCH_VERSION"] == _pins()["torch"]
    froms = [a for kw, a in steps if kw == "FROM"]
    assert "rayproject/ray:${RAY_VERSION}-py311-cpu AS base-cpu" in froms
    assert "rayproject/ray:${RAY_VERSION}-py311-gpu AS base-gpu" in froms
    assert froms[-1] == "base-${VARIANT}" and args["VARIANT"] in ("cpu", "gpu")
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", text)


def test_dockerignore_keeps_the_dependency_inputs():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert ".git" in patterns and "runs" in patterns
    for needed in ("pyproject.toml", "infra/constraints.txt", "hybrid/__init__.py"):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), needed


def test_constraints_pin_every_runtime_dependency():
    tomllib = pytest.importorskip("tomllib")
    pins = _pins()
    assert all(re.fullmatch(r"[\w.+!]+", v) for v in pins.values()), pins
    with (REPO / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    for requirement in dependencies:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, requirement
    assert pins["ray"] == RAY_VERSION
    for name in ("botocore", "aiobotocore", "boto3"):  # the S3 stack moves as one
        assert name in pins, name
    # generated, and says how
    assert "python infra/freeze_constraints.py > infra/constraints.txt" in CONSTRAINTS.read_text()


def _direct_dependencies() -> list[str]:
    """pyproject.toml's dependencies and boto3 (installed in the image beside them)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the test below then has nothing to compare
        return []
    with (REPO / "pyproject.toml").open("rb") as f:
        requirements = tomllib.load(f)["project"]["dependencies"]
    return [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements] + ["boto3"]


@pytest.mark.parametrize("name", _direct_dependencies())
def test_constraints_pin_the_installed_versions(name):
    """The file claims the versions the tests ran with: here they are running."""
    from importlib import metadata

    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed here, so its pin cannot be compared")
    pinned = _pins()[re.sub(r"[-_.]+", "-", name).lower()]
    # a local label (torch's +cpu / +cu128) is the build, not the version
    assert pinned == installed.split("+", 1)[0], \
        f"{name}: pinned {pinned}, installed {installed}; run infra/freeze_constraints.py"


# ------------------------------------------------------------------ .rayignore
def test_rayignore_keeps_the_job_upload_to_the_code(tmp_path):
    """What `ray job submit --working-dir .` packs, by Ray's own packer, from a checkout with a
    virtual environment, git history, run outputs and caches beside the code; .rayignore alone
    (no .gitignore: it lacks .git, and RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 turns it off)."""
    import zipfile

    packaging = pytest.importorskip("ray._private.runtime_env.packaging")
    checkout = tmp_path / "checkout"
    kept = ["hybrid/__init__.py", "hybrid/store/runs.py", "jobs/run_pipeline.py",
            "configs/demo.yml",
            "models/camels-us-s2s-h128/checkpoints/final.pt", "pyproject.toml", ".rayignore"]
    dropped = [".git/HEAD", ".git/objects/ab/cdef", ".venv/bin/python", ".venv/lib/x.py",
               "runs/demo/summary/summary.parquet", "shared/data/README.md",
               "hybrid/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v/cache",
               ".ruff_cache/x", "build/lib/hybrid/cli.py", "hybrid.egg-info/PKG-INFO"]
    for name in kept + dropped:
        path = checkout / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name != ".rayignore":
            path.write_text("x")
    shutil.copy(REPO / ".rayignore", checkout / ".rayignore")
    package = tmp_path / "package.zip"
    packaging._zip_files(str(checkout), [], str(package), include_gitignore=False)
    uploaded = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert uploaded == set(kept)


def test_every_extra_the_project_asks_for_exists():
    """An extra a dependency does not provide is dropped with a warning at set-up (s3fs has no
    `boto3` extra), and whatever it was meant to pull in is then missing or unpinned."""
    tomllib = pytest.importorskip("tomllib")
    from importlib import metadata

    from packaging.requirements import Requirement

    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for group in project["optional-dependencies"].values()
                     for r in group]
    checked = 0
    for requirement in requirements:
        if not requirement.extras:
            continue
        try:
            provided = metadata.metadata(requirement.name).get_all("Provides-Extra") or []
        except metadata.PackageNotFoundError:
            continue
        normalize = lambda extra: re.sub(r"[-_.]+", "-", extra).lower()  # noqa: E731
        missing = {normalize(e) for e in requirement.extras} - {normalize(e) for e in provided}
        assert not missing, f"{requirement}: {requirement.name} has no extra {sorted(missing)}"
        checked += 1
    assert checked, "no installed dependency with extras to check"


# ------------------------------------------------------------------ infra/local/*.sh
def test_local_scripts_exist():
    names = {p.name for p in LOCAL_SCRIPTS}
    assert {"start_s3.sh", "start_cluster.sh", "submit.sh", "stop.sh"} <= names


@pytest.mark.parametrize("script", LOCAL_SCRIPTS, ids=lambda p: p.name)
def test_local_script_syntax(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if not script.name.startswith("_"):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash")
        assert "set -euo pipefail" in text
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
