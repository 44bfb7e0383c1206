"""JupyterHub for a smolkit team workshop on one (GPU) box: every participant gets a JupyterLab with the smolkit
kernel and their own copy of the notebooks; all share one read-only model cache and the GPU, each kernel capped.

Start it with `environment/workshop.sh start` (after `environment/workshop.sh prepare`); see environment/README.md.
Settings come from the environment, so the same file serves the workshop and its test:

  SMOLKIT_HUB_PASSWORD        the participants' shared password (8+ characters; required)
  SMOLKIT_HUB_USERS           allowed user names, comma-separated (default: anyone with the password)
  SMOLKIT_HUB_ADMINS          admin user names; they log in with SMOLKIT_HUB_ADMIN_PASSWORD (32+ characters)
  SMOLKIT_HUB_MAX_USERS       servers running at once (default 8): the GPU and the CPU cores are split this way
  SMOLKIT_GPU_MEMORY_FRACTION per-kernel GPU memory cap (default 0.85 / SMOLKIT_HUB_MAX_USERS)
  SMOLKIT_HUB_CULL_IDLE_S     shut down kernels idle this long, freeing their GPU memory (default 1800; 0 = never)
  SMOLKIT_HUB_IP, _PORT       where participants connect (default 127.0.0.1:8000; TLS with _SSL_CERT and _SSL_KEY)
  SMOLKIT_HUB_API_PORT        the hub's internal API on 127.0.0.1 (default 8081)
  SMOLKIT_HUB_PROXY_API_PORT  the proxy's internal API on 127.0.0.1 (default 8001)
  SMOLKIT_WORKSHOP_DIR        hub state, participants' homes, shared cache (default ~/smolkit-workshop)
  SMOLKIT_WORKSHOP_CACHE      the shared model cache (default $SMOLKIT_WORKSHOP_DIR/cache)
  SMOLKIT_HUB_PROXY           configurable-http-proxy (default: environment/proxy/node_modules/.bin/...)

Trust model: SimpleLocalProcessSpawner runs every participant's server as the account that runs the hub, with a
home folder of its own but no isolation between participants. That fits a team on a box it trusts; real isolation
needs system users (LocalProcessSpawner with PAM) or containers (DockerSpawner), see environment/README.md.
"""

import os
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub provides get_config when it loads this file)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv the hub runs from: its jupyterhub-singleuser and smolkit kernel
env = os.environ.get


def number(name: str, default: str, kind=int):
    value = env(name) or default
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {value!r}") from None


WORKSHOP = Path(env("SMOLKIT_WORKSHOP_DIR") or Path.home() / "smolkit-workshop").expanduser().resolve()
STATE, HOMES = WORKSHOP / "hub", WORKSHOP / "homes"
CACHE = Path(env("SMOLKIT_WORKSHOP_CACHE") or WORKSHOP / "cache").expanduser().resolve()
MAX_USERS = number("SMOLKIT_HUB_MAX_USERS", "8")
GPU_FRACTION = number("SMOLKIT_GPU_MEMORY_FRACTION", f"{0.85 / max(MAX_USERS, 1):.4f}", float)
CULL_IDLE_S = number("SMOLKIT_HUB_CULL_IDLE_S", "1800")
PROXY = Path(env("SMOLKIT_HUB_PROXY") or REPO / "environment/proxy/node_modules/.bin/configurable-http-proxy")

if not 0 < GPU_FRACTION <= 1:
    raise SystemExit(f"SMOLKIT_GPU_MEMORY_FRACTION must be in (0, 1], got {GPU_FRACTION}")
if not (CACHE / "smolkit").is_dir():
    raise SystemExit(f"no shared model cache in {CACHE}: run `environment/workshop.sh prepare` first")
if not PROXY.is_file():
    raise SystemExit(f"configurable-http-proxy not found at {PROXY}: run `environment/workshop.sh prepare` first")
STATE.mkdir(parents=True, exist_ok=True)
HOMES.mkdir(parents=True, exist_ok=True)

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
c.JupyterHub.active_server_limit = MAX_USERS  # the GPU share below assumes no more servers than this
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every participant's server

# -- who may log in: one shared password (JupyterHub's SharedPasswordAuthenticator, made for workshops) -------------
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env("SMOLKIT_HUB_PASSWORD")
if not env("SMOLKIT_HUB_PASSWORD"):
    raise SystemExit("set SMOLKIT_HUB_PASSWORD (8 or more characters): the password participants log in with")
if env("SMOLKIT_HUB_USERS"):
    c.Authenticator.allowed_users = {u.strip() for u in env("SMOLKIT_HUB_USERS").split(",") if u.strip()}
else:
    c.Authenticator.allow_all = True
if env("SMOLKIT_HUB_ADMINS"):
    c.Authenticator.admin_users = {u.strip() for u in env("SMOLKIT_HUB_ADMINS").split(",") if u.strip()}
    c.SharedPasswordAuthenticator.admin_password = env("SMOLKIT_HUB_ADMIN_PASSWORD")

# -- each participant's server ----------------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "simple"  # SimpleLocalProcessSpawner: see the trust model above
c.SimpleLocalProcessSpawner.home_dir_template = str(HOMES / "{username}")
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.args = [f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}", "--MappingKernelManager.cull_interval=60"]
if os.geteuid() == 0:
    c.Spawner.args.append("--allow-root")
c.Spawner.default_url = "/lab/tree/notebooks"
c.Spawner.start_timeout = 180  # generous: many participants log in at the same minute
c.Spawner.http_timeout = 120
c.Spawner.environment = {
    # one read-only model cache for everybody, never the network
    "HF_HOME": str(CACHE / "hf"),
    "SMOLKIT_CACHE_DIR": str(CACHE / "smolkit"),
    "HF_HUB_OFFLINE": "1",
    # the GPU split: smolkit.load_model applies torch.cuda.set_per_process_memory_fraction in each kernel
    "SMOLKIT_GPU_MEMORY_FRACTION": f"{GPU_FRACTION:g}",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    # the CPU split: torch would otherwise start one thread per core in every kernel
    "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(MAX_USERS, 1))),
    "JUPYTER_PLATFORM_DIRS": "1",
}


def copy_notebooks(spawner) -> None:
    """Give the participant their own copy of notebooks/; later starts add new files, never overwrite their work."""
    source_root, target_root = REPO / "notebooks", Path(spawner.home_dir) / "notebooks"
    for source in sorted(source_root.rglob("*")):
        target = target_root / source.relative_to(source_root)
        if source.is_file() and ".ipynb_checkpoints" not in source.parts and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


c.Spawner.pre_spawn_hook = copy_notebooks
