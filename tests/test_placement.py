"""Where the encoder goes on a Ray cluster: a GPU when there is one or the autoscaler can add
one, else the CPUs of the largest node, said in the log. In-process, on the local Ray instance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid.execution import ray_executor as hybrid_cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_launcher_config(monkeypatch, tmp_path) -> Path:
    path = tmp_path / "ray_bootstrap_config.yaml"
    monkeypatch.setattr(hybrid_cluster, "BOOTSTRAP_CONFIG", str(path))
    return path


def test_zero_gpu_cluster_runs_encoder_on_cpu_and_says_so(ray_local, no_launcher_config,
                                                         tiny_config, tmp_path, capsys) -> None:
    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("the local Ray instance has a GPU")
    cpus = max(n["Resources"].get("CPU", 0) for n in hybrid_cluster.alive_nodes())
    resources = hybrid_cluster.encoder_resources(tiny_config(str(tmp_path)))
    assert (resources.num_gpus, resources.num_cpus) == (0.0, float(cpus))
    assert "the encoder actor runs on CPU with" in capsys.readouterr().err


def test_auto_gpu_waits_for_a_gpu_node_the_launcher_can_add(ray_local, no_launcher_config,
                                                            tiny_config, tmp_path,
                                                            capsys) -> None:
    """A cluster launcher head with GPU workers at min 0: "auto" asks for one anyway."""
    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("the local Ray instance has a GPU")
    import yaml

    launcher = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    no_launcher_config.write_text(yaml.safe_dump(launcher))
    assert hybrid_cluster.launchable_gpus() == 1.0
    # a driver on the cluster (an address), not a private local instance, which never grows
    joined = {"address": "auto"}
    resources = hybrid_cluster.encoder_resources(tiny_config(str(tmp_path), resources=joined))
    assert (resources.num_gpus, resources.num_cpus) == (1.0, 1.0)
    assert "the autoscaler can add one" in capsys.readouterr().err
    local = hybrid_cluster.encoder_resources(tiny_config(str(tmp_path)))
    assert local.num_gpus == 0.0
    # an explicit 0 still means CPU
    zero = hybrid_cluster.encoder_resources(
        tiny_config(str(tmp_path), resources={"encoder_num_gpus": 0}))
    assert zero.num_gpus == 0.0
    # a launcher config without GPU workers changes nothing
    launcher["available_node_types"] = {
        k: v for k, v in launcher["available_node_types"].items()
        if not (v.get("resources") or {}).get("GPU")}
    no_launcher_config.write_text(yaml.safe_dump(launcher))
    assert hybrid_cluster.launchable_gpus() == 0.0


def test_auto_gpu_reads_the_cluster_config_an_autoscaler_reports(ray_local, no_launcher_config,
                                                                 tiny_config, tmp_path) -> None:
    """Newer autoscalers report their node types to the GCS (Ray Train / Data read it)."""
    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("the local Ray instance has a GPU")
    from ray.core.generated import autoscaler_pb2

    gcs = ray_local._private.worker.global_worker.gcs_client
    config = autoscaler_pb2.ClusterConfig()
    group = autoscaler_pb2.NodeGroupConfig(name="gpu", min_count=0, max_count=1)
    group.resources["CPU"], group.resources["GPU"] = 4, 1
    config.node_group_configs.append(group)
    try:
        gcs.report_cluster_config(config.SerializeToString())
        assert hybrid_cluster.launchable_gpus() == 1.0
        cfg = tiny_config(str(tmp_path), resources={"address": "auto"})
        assert hybrid_cluster.encoder_resources(cfg).num_gpus == 1.0
    finally:  # the instance is shared with other tests
        gcs.report_cluster_config(autoscaler_pb2.ClusterConfig().SerializeToString())
    assert hybrid_cluster.launchable_gpus() == 0.0


def test_decoder_tasks_reserve_what_the_config_says(tiny_config, tmp_path) -> None:
    cfg = tiny_config(str(tmp_path), resources={"decoder_num_cpus": 2, "decoder_memory_mb": 512,
                                                "decoder_custom_resources": {"decoder_node": 1},
                                                "max_retries": 5})
    resources = hybrid_cluster.worker_resources(cfg)
    assert hybrid_cluster.ray_options(resources) == {
        "num_cpus": 2, "num_gpus": 0, "memory": 512 * 1024 * 1024,
        "resources": {"decoder_node": 1}}
    assert resources.max_retries == 5
