"""The Kubernetes backend's pod (built and validated here; no cluster runs in tests)."""

from pathlib import Path

from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from resources.compute import ComputeResource


def test_pod_carries_gpu_limit_image_command_and_models_volume():
    compute = ComputeResource(backend="k8s", models_dir="/models", image="registry/gxplab:1.2",
                              gpus=2, memory="64Gi")
    command = compute.command("qlora_adapter", {"max_steps": 10}, Path("/models/qlora/run-1"))
    pod = build_pod_body(pod_name="gxplab-qlora", image=compute.image, command=command,
                         env_vars={"HF_HUB_OFFLINE": "0"}, base_pod_meta=None,
                         base_pod_spec=compute.k8s_pod_spec())
    manifest = ApiClient().sanitize_for_serialization(pod)  # what would be sent to the API server
    container = manifest["spec"]["containers"][0]
    assert container["image"] == "registry/gxplab:1.2"
    assert container["command"][:3] == ["python", "-m", "resources.pipes_entry"]
    assert container["command"][3:6] == ["qlora_adapter", "--output-dir", "/models/qlora/run-1"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "64Gi"}
    assert container["volumeMounts"] == [{"mountPath": "/models", "name": "models"}]
    assert manifest["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "gxplab-models"}
    assert manifest["spec"]["restartPolicy"] == "Never"
    assert manifest["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "HF_HUB_OFFLINE", "value": "0"} in container["env"]


def test_local_backend_uses_this_interpreter():
    import sys

    compute = ComputeResource(models_dir="/tmp/m")
    assert compute.command("base_model", {}, Path("/tmp/m/x"))[0] == sys.executable
