"""JupyterHub for a smolkit workshop on one (GPU) box, for participants who need not trust each other.

Every participant is a system account of their own (made by `workshop/workshop.sh users`, with a generated
password), logs in with that password (JupyterHub's PAMAuthenticator) and gets a JupyterLab server that runs as
that account (JupyterHub's LocalProcessSpawner), in a home folder only they can read, with the smolkit kernel and
their own copy of the notebooks. All read one model cache that root owns and nobody can write. The hub runs as
root (it must, to start servers as other accounts and to check passwords); its state is root's alone.

Start it with `workshop/workshop.sh start` (after `prepare` and `users`); see workshop/SETUP.md. Settings
come from the environment, so the same file serves the workshop and its test:

  SMOLKIT_WORKSHOP_DIR        hub state, participants' homes, shared cache (default /srv/smolkit-workshop)
  SMOLKIT_WORKSHOP_CACHE      the shared model cache (default $SMOLKIT_WORKSHOP_DIR/cache)
  SMOLKIT_HUB_GROUP           the participants' system group: only its members may log in (default smolkit)
  SMOLKIT_HUB_ADMIN_GROUP     the facilitators' group: they may log in, see and open every server (smolkit-admin)
  SMOLKIT_HUB_MAX_USERS       servers running at once (default 8): the GPU and the CPU cores are split this way;
                              one shared GPU gets as many seats (kernels on it at once, smolkit.gpu_seats)
  SMOLKIT_HUB_GPU_CONTEXT_GB  a kernel's GPU memory outside torch (default 1.0; `workshop.sh capacity` measures it)
  SMOLKIT_GPU_MEMORY_FRACTION each kernel's share of the GPU memory (default: workshop/gpu_split.py's split, which
                              leaves every seat its share and its context); the kernel applies it itself
                              (smolkit.gpu_share), see workshop/SETUP.md, "The GPU"
  SMOLKIT_HUB_GPU_DEVICES     optional file of "name device" lines: the GPU (or MIG instance UUID) each
                              participant's server sees as CUDA_VISIBLE_DEVICES; others see SMOLKIT_HUB_GPU_DEFAULT
  SMOLKIT_HUB_MPS             auto, on or off: every kernel a client of one NVIDIA MPS server (multi-user), so
                              kernels share the GPU at once (default auto: where the box has a GPU and MPS);
                              workshop/mps_service.py
  SMOLKIT_COMPILE_AFTER_S     the fast path's compiled tier in participants' kernels (default never: plain tier)
  SMOLKIT_HUB_CULL_IDLE_S     shut down kernels idle this long, open tab or not, freeing their memory (1800; 0 never)
  SMOLKIT_HUB_CULL_SERVERS_S  stop servers idle this long (jupyterhub-idle-culler; default 3600; 0 = never)
  SMOLKIT_HUB_NPROC           most processes and threads one participant may run (default 1024): no fork bombs
  SMOLKIT_HUB_IP, _PORT       where participants connect (default 127.0.0.1:8000; TLS with _SSL_CERT and _SSL_KEY)
  SMOLKIT_HUB_API_PORT        the hub's internal API on 127.0.0.1 (default 8081)
  SMOLKIT_HUB_PROXY_API_PORT  the proxy's internal API on 127.0.0.1 (default 8001)
  SMOLKIT_HUB_PROXY           configurable-http-proxy (default: workshop/proxy/node_modules/.bin/...)
"""

import os
import pwd
import resource
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner

c = get_config()  # noqa: F821 (JupyterHub provides get_config when it loads this file)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv the hub runs from: its jupyterhub-singleuser and smolkit kernel
env = os.environ.get


def number(name: str, default: str, kind=int, least=None):
    """The setting ``name`` as a ``kind`` (``default`` when unset or empty); SystemExit naming it when it is not a
    number, or below ``least``."""
    value = env(name) or default
    try:
        result = kind(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {value!r}") from None
    if least is not None and result < least:
        raise SystemExit(f"{name} must be at least {least}, got {value!r}")
    return result


WORKSHOP = Path(env("SMOLKIT_WORKSHOP_DIR") or "/srv/smolkit-workshop").expanduser().resolve()
STATE = WORKSHOP / "hub"
CACHE = Path(env("SMOLKIT_WORKSHOP_CACHE") or WORKSHOP / "cache").expanduser().resolve()
GROUP, ADMIN_GROUP = env("SMOLKIT_HUB_GROUP") or "smolkit", env("SMOLKIT_HUB_ADMIN_GROUP") or "smolkit-admin"
MAX_USERS = number("SMOLKIT_HUB_MAX_USERS", "8", least=1)  # 0 would mean unlimited servers
GPU_FRACTION = number("SMOLKIT_GPU_MEMORY_FRACTION", "1", float) if env("SMOLKIT_GPU_MEMORY_FRACTION") else None
GPU_CONTEXT_GB = number("SMOLKIT_HUB_GPU_CONTEXT_GB", "1.0", float, least=0)
CULL_IDLE_S = number("SMOLKIT_HUB_CULL_IDLE_S", "1800", least=0)
CULL_SERVERS_S = number("SMOLKIT_HUB_CULL_SERVERS_S", "3600", least=0)
NPROC = number("SMOLKIT_HUB_NPROC", "1024", least=1)  # -1 would mean no cap (RLIM_INFINITY)
PROXY = Path(env("SMOLKIT_HUB_PROXY") or REPO / "workshop/proxy/node_modules/.bin/configurable-http-proxy")

if os.geteuid() != 0:
    raise SystemExit(
        "the workshop hub runs as root: it starts each participant's server as that participant's own account and "
        "checks their passwords (PAM); run `sudo workshop/workshop.sh start`. For one person, `make lab` suffices"
    )
if GPU_FRACTION is not None and not 0 < GPU_FRACTION <= 1:
    raise SystemExit(f"SMOLKIT_GPU_MEMORY_FRACTION must be in (0, 1], got {GPU_FRACTION}")
if not (CACHE / "smolkit").is_dir():
    raise SystemExit(f"no shared model cache in {CACHE}: run `workshop/workshop.sh prepare` first")
if not PROXY.is_file():
    raise SystemExit(f"configurable-http-proxy not found at {PROXY}: run `workshop/workshop.sh prepare` first")
STATE.mkdir(mode=0o700, parents=True, exist_ok=True)
STATE.chmod(0o700)  # the database, the cookie secret and the password list: root's alone

# -- where it listens ----------------------------------------------------------------------------------------------
ip, port = env("SMOLKIT_HUB_IP") or "127.0.0.1", number("SMOLKIT_HUB_PORT", "8000")
if env("SMOLKIT_HUB_SSL_CERT") and env("SMOLKIT_HUB_SSL_KEY"):
    c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key = env("SMOLKIT_HUB_SSL_CERT"), env("SMOLKIT_HUB_SSL_KEY")
    c.JupyterHub.bind_url = f"https://{ip}:{port}"
else:
    c.JupyterHub.bind_url = f"http://{ip}:{port}"
    if not ip.startswith("127."):
        print(f"smolkit hub: listening on {ip} without TLS: passwords cross the network in clear", file=sys.stderr)
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{number('SMOLKIT_HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{number('SMOLKIT_HUB_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [str(PROXY)]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")

# -- the hub's own state --------------------------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.active_server_limit = MAX_USERS  # the GPU split below and the CPU threads assume no more than this
c.JupyterHub.concurrent_spawn_limit = MAX_USERS
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every participant's server

# -- who may log in: system accounts of the two groups, each with their own password ----------------------------------
c.JupyterHub.authenticator_class = "pam"  # JupyterHub's PAMAuthenticator: the password set by `workshop.sh users`
c.PAMAuthenticator.allowed_groups = {GROUP, ADMIN_GROUP}  # root and every other account of the box: refused
c.PAMAuthenticator.admin_groups = {ADMIN_GROUP}


# -- each participant's server, as their own account --------------------------------------------------------------
class WorkshopSpawner(LocalProcessSpawner):
    """JupyterHub's LocalProcessSpawner (the server runs as the participant's account, in their home) plus what a
    local process can be held to without cgroups: a cap on the participant's processes and threads (RLIMIT_NPROC,
    counted per account, hard limit set before the switch so the participant cannot raise it), first in line for
    the kernel's out-of-memory killer (oom_score_adj 500, which an unprivileged process cannot lower), and bash in
    JupyterLab's terminals although the account's login shell is nologin (no ssh or su with that password).
    Memory and CPU caps per participant need cgroups: SystemdSpawner where systemd runs (workshop/SETUP.md)."""

    def make_preexec_fn(self, name):
        switch_user = super().make_preexec_fn(name)

        def preexec():
            resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("500")
            switch_user()

        return preexec

    def user_env(self, env):
        env = super().user_env(env)
        env["SHELL"] = "/bin/bash"
        return env


def copy_notebooks(spawner) -> None:
    """Give the participant their own copy of notebooks/ (later starts add new files, never overwrite their work).
    The copy runs as the participant, so a link they planted in their home cannot make root write elsewhere."""
    account = pwd.getpwnam(spawner.user.name)
    subprocess.run(
        [sys.executable, "-c", COPY_NOTEBOOKS, str(REPO / "notebooks"), os.path.join(account.pw_dir, "notebooks")],
        user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd=account.pw_dir, check=True, timeout=120,
        env={"HOME": account.pw_dir, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


COPY_NOTEBOOKS = """
import os, shutil, sys
from pathlib import Path
source_root, target_root = Path(sys.argv[1]), Path(sys.argv[2])
for source in sorted(source_root.rglob("*")):
    target = target_root / source.relative_to(source_root)
    if source.is_file() and ".ipynb_checkpoints" not in source.parts and not os.path.lexists(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
"""


def gpu_devices() -> dict[str, str]:
    """SMOLKIT_HUB_GPU_DEVICES: a file of "name device" lines (e.g. "ada MIG-5c3d..."), read once at start."""
    if not env("SMOLKIT_HUB_GPU_DEVICES"):
        return {}
    lines = Path(env("SMOLKIT_HUB_GPU_DEVICES")).read_text().splitlines()
    pairs = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"SMOLKIT_HUB_GPU_DEVICES: every line must be 'name device', got {pairs}")
    return dict(pairs)


GPU_DEVICES = gpu_devices()


def visible_devices(spawner) -> str:
    """The participant's device from SMOLKIT_HUB_GPU_DEVICES, else SMOLKIT_HUB_GPU_DEFAULT ("" = none: the CPU)."""
    return GPU_DEVICES.get(spawner.user.name, env("SMOLKIT_HUB_GPU_DEFAULT") or "")


c.JupyterHub.spawner_class = WorkshopSpawner
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.args = [
    f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
    f"--MappingKernelManager.cull_interval={max(1, min(60, CULL_IDLE_S // 4))}",
    "--MappingKernelManager.cull_connected=True",  # an idle kernel goes even with its tab open: the GPU needs it
]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks"
c.Spawner.start_timeout = 180  # generous: many participants log in at the same minute
c.Spawner.http_timeout = 120
c.Spawner.environment = {
    # one read-only model cache for everybody, never the network
    "HF_HOME": str(CACHE / "hf"),
    "SMOLKIT_CACHE_DIR": str(CACHE / "smolkit"),
    "HF_HUB_OFFLINE": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    # the GPU's time: the fast path stays in its plain tier, so that no kernel compiles in the middle of the session
    # (N compiles at once on a shared box: issue 27, bench/workshop_load.py --variants base,plain)
    "SMOLKIT_COMPILE_AFTER_S": env("SMOLKIT_COMPILE_AFTER_S") or "never",
    # the CPU split: torch would otherwise start one thread per core in every kernel
    "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(MAX_USERS, 1))),
    "JUPYTER_PLATFORM_DIRS": "1",
}
if GPU_DEVICES:
    c.Spawner.environment["CUDA_VISIBLE_DEVICES"] = visible_devices
c.Spawner.pre_spawn_hook = copy_notebooks

# -- the GPU split (workshop/gpu_split.py): each kernel applies its share itself (smolkit.gpu_share) and takes a seat
# before it touches a shared GPU (smolkit.gpu_seats); workshop/SETUP.md, "The GPU", says what enforces what ----------
SPLIT = runpy.run_path(str(REPO / "workshop" / "gpu_split.py"))
GPU_TOTAL = None if GPU_DEVICES else SPLIT["gpu_total_bytes"]()
if GPU_DEVICES:  # a device (a MIG instance) per participant or group: its memory is split among those it names
    SHARING = Counter(GPU_DEVICES.values())

    def device_fraction(spawner) -> str:
        """USE of the participant's device, split among the participants the device file gives it (MAX_USERS for
        the default device, whom the file does not count)."""
        return f"{GPU_FRACTION or SPLIT['USE'] / SHARING.get(visible_devices(spawner), MAX_USERS):.4g}"

    c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] = device_fraction
elif GPU_TOTAL:  # one GPU for everybody: MAX_USERS seats, and a share each that leaves every seat room for its context
    try:
        fraction = GPU_FRACTION or SPLIT["kernel_fraction"](GPU_TOTAL, MAX_USERS, GPU_CONTEXT_GB * 1e9)
    except ValueError as err:
        raise SystemExit(f"SMOLKIT_HUB_MAX_USERS={MAX_USERS} is too many for this GPU: {err}; "
                         "`workshop/workshop.sh capacity` says how many it holds") from None  # fmt: skip
    c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] = f"{fraction:.4g}"
    c.Spawner.environment["SMOLKIT_GPU_SEATS"] = str(SPLIT["make_seats"](WORKSHOP / "gpu-seats", MAX_USERS))
else:  # no GPU: kernels run on the CPU, where a share means nothing
    c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] = f"{GPU_FRACTION or SPLIT['USE'] / MAX_USERS:.4g}"

# -- idle servers stopped by jupyterhub-idle-culler, a hub service with only the rights it needs ----------------------
c.JupyterHub.services = []
c.JupyterHub.load_roles = []
if CULL_SERVERS_S > 0:
    c.JupyterHub.services.append({
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={CULL_SERVERS_S}",
                    f"--cull-every={max(1, min(300, CULL_SERVERS_S // 4))}"],
        "user": "nobody",  # it needs no file of the hub's, only its own token
    })  # fmt: skip
    c.JupyterHub.load_roles.append({
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    })  # fmt: skip


# -- NVIDIA MPS: kernels of every account share the GPU at once (workshop/mps_service.py) ----------------------------
try:
    MPS = runpy.run_path(str(REPO / "workshop" / "mps_service.py"))["wanted_here"]()
except ValueError as err:
    raise SystemExit(str(err)) from None
if MPS:
    MPS_DIRS = {"CUDA_MPS_PIPE_DIRECTORY": WORKSHOP / "mps/pipe", "CUDA_MPS_LOG_DIRECTORY": WORKSHOP / "mps/log"}
    for folder in MPS_DIRS.values():
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)  # participants' kernels connect through the pipes
    c.JupyterHub.services.append({
        "name": "mps",  # JupyterHub starts it with the hub, restarts it if it dies and stops it with the hub
        "command": [sys.executable, str(REPO / "workshop" / "mps_service.py"), "serve"],
        "environment": {name: str(folder) for name, folder in MPS_DIRS.items()},
    })  # fmt: skip
    c.Spawner.environment["CUDA_MPS_PIPE_DIRECTORY"] = str(MPS_DIRS["CUDA_MPS_PIPE_DIRECTORY"])
