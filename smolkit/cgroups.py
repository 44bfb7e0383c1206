"""How much memory this process's control groups still allow it: cgroup v2 and v1, nested limits included.

A container, a systemd slice or a workshop kernel may hold the process to less memory than the machine has free,
and passing that limit ends in the kernel's OOM killer (exit 137), not in an exception. The limit that applies is
the smallest of every cgroup from the process's own up to the hierarchy's root (a parent's limit binds its
children), in the v2 hierarchy (``memory.max``, ``memory.current``) and in the v1 memory controller's
(``memory.limit_in_bytes``, ``memory.usage_in_bytes``). Which cgroups those are comes from ``/proc/self/cgroup``,
and where their hierarchies are mounted from ``/proc/self/mountinfo``.

Hand-written: psutil reports the machine's memory, not a cgroup's, and no well-kept library reads both versions.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

__all__ = ["memory_left"]

V1_UNLIMITED = 2**62
"""cgroup v1 writes "no limit" as the largest page-aligned 64-bit number (9223372036854771712); anything this big
is no limit."""
PROC_SELF = Path("/proc/self")
"""Where this process's ``cgroup`` and ``mountinfo`` files are read (tests point it at a fake)."""


def _unescape(field: str) -> str:
    r"""mountinfo's escapes: a space in a mount point is written \040, a tab \011, a newline \012, a backslash \134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts(proc: Path) -> list[tuple[str, Path, str]]:
    """The cgroup mounts in ``proc``/mountinfo: (the cgroup the mount shows as its root, mount point, version),
    version "2" or "1" (a v1 mount of the memory controller; other v1 controllers are left out)."""
    mounts = []
    for line in (proc / "mountinfo").read_text().splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        after = fields[fields.index("-") + 1 :]
        if len(fields) < 5 or len(after) < 3:
            continue
        root, point = _unescape(fields[3]), Path(_unescape(fields[4]))
        if after[0] == "cgroup2":
            mounts.append((root, point, "2"))
        elif after[0] == "cgroup" and "memory" in after[2].split(","):
            mounts.append((root, point, "1"))
    return mounts


def _own_cgroups(proc: Path) -> dict[str, str]:
    """This process's cgroup path in each hierarchy that can limit memory: {"2": path, "1": path}."""
    own = {}
    for line in (proc / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and controllers == "":
            own["2"] = path
        elif "memory" in controllers.split(","):
            own["1"] = path
    return own


def _folders(mount_root: str, point: Path, path: str) -> list[Path]:
    """The folders of cgroup ``path`` and its ancestors under a mount at ``point`` showing cgroup ``mount_root``,
    the process's own first. A path outside the mount's root (another cgroup namespace) is the mount itself."""
    relative = Path(path).relative_to(mount_root) if Path(path).is_relative_to(mount_root) else Path()
    own = point / relative
    return [own, *[p for p in own.parents if p.is_relative_to(point)]]


def _read_int(path: Path) -> int | None:
    """The number in a cgroup file, None for "max", a missing or unreadable file or junk."""
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        return None if text == "max" else int(text)
    return None


def _left_in(folder: Path, version: str) -> int | None:
    """What the cgroup in ``folder`` still allows (its limit less its usage), None when it sets no limit."""
    limit_file, usage_file = ("memory.max", "memory.current") if version == "2" else (
        "memory.limit_in_bytes", "memory.usage_in_bytes")  # fmt: skip
    limit = _read_int(folder / limit_file)
    if limit is None or limit >= V1_UNLIMITED:
        return None
    return max(limit - (_read_int(folder / usage_file) or 0), 0)


def memory_left(proc: Path | None = None) -> int | None:
    """Bytes this process may still allocate before a cgroup memory limit on its path stops it: the smallest of
    limit less usage over its cgroups and their ancestors, v2 and v1; None when none sets a limit (or ``proc``
    cannot be read). ``proc``: where the process's ``cgroup`` and ``mountinfo`` files are (default PROC_SELF)."""
    proc = PROC_SELF if proc is None else proc
    try:
        own, mounts = _own_cgroups(proc), _mounts(proc)
    except OSError:
        return None
    lefts = [
        left
        for mount_root, point, version in mounts
        if version in own
        for folder in _folders(mount_root, point, own[version])
        if (left := _left_in(folder, version)) is not None
    ]
    return min(lefts, default=None)
