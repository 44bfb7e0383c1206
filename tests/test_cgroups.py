"""smolkit.cgroups reads the memory limit the process really has: cgroup v2 and v1, the smallest limit on the path
from its own cgroup to the root, in fake cgroup trees (a /proc/self with its cgroup and mountinfo files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smolkit import cgroups, generation

GiB = 2**30
V1_NO_LIMIT = "9223372036854771712"


def fake_proc(tmp_path: Path, cgroup: str, mounts: list[tuple[str, Path, str, str]]) -> Path:
    """A /proc/self whose cgroup file is ``cgroup`` and whose mountinfo lists ``mounts``: (root, point, type,
    super options), after the machine's usual / and /proc lines."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = ["22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw", "23 22 0:5 / /proc rw - proc proc rw"]
    for i, (root, point, kind, options) in enumerate(mounts):
        escaped = str(point).replace(" ", "\\040")
        lines.append(f"{40 + i} 22 0:{30 + i} {root} {escaped} rw,nosuid shared:9 - {kind} {kind} {options}")
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    return proc


def v2(folder: Path, limit: int | str, current: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memory.max").write_text(f"{limit}\n")
    (folder / "memory.current").write_text(f"{current}\n")


def v1(folder: Path, limit: int | str, usage: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (folder / "memory.usage_in_bytes").write_text(f"{usage}\n")


def test_v2_a_parents_limit_binds_its_child(tmp_path):
    mount = tmp_path / "cgroup"
    v2(mount, "max", 10 * GiB)  # the root cgroup
    v2(mount / "workshop.slice", 2 * GiB, GiB // 2)
    v2(mount / "workshop.slice" / "ada.scope", "max", GiB // 4)
    proc = fake_proc(tmp_path, "0::/workshop.slice/ada.scope\n", [("/", mount, "cgroup2", "rw,nsdelegate")])
    assert cgroups.memory_left(proc) == 2 * GiB - GiB // 2


def test_v2_the_childs_own_limit_when_it_is_the_smaller(tmp_path):
    mount = tmp_path / "cgroup"
    v2(mount / "a", 4 * GiB, GiB)
    v2(mount / "a" / "b", GiB, GiB // 4)
    proc = fake_proc(tmp_path, "0::/a/b\n", [("/", mount, "cgroup2", "rw")])
    assert cgroups.memory_left(proc) == GiB - GiB // 4


def test_v1_nested_memory_controller(tmp_path):
    """The machine kind of issue 23: cgroup v1, a 2 GiB limit on the process's memory cgroup's parent."""
    mount = tmp_path / "fs cgroup" / "memory"  # a space in the mount point: \\040 in mountinfo
    v1(mount, V1_NO_LIMIT, 50 * GiB)
    v1(mount / "process_api", 2 * GiB, GiB)
    v1(mount / "process_api" / "job1", V1_NO_LIMIT, GiB)
    cpu = tmp_path / "cpu"
    v1(cpu / "process_api" / "job1", GiB // 8, 0)  # a memory file under another controller: not a limit
    cgroup = "5:cpu,cpuacct:/process_api/job1\n4:memory:/process_api/job1\n0::/\n"
    mounts = [("/", cpu, "cgroup", "rw,cpu,cpuacct"), ("/", mount, "cgroup", "rw,memory")]
    assert cgroups.memory_left(fake_proc(tmp_path, cgroup, mounts)) == GiB


def test_v1_in_a_container_whose_mount_shows_its_own_cgroup_as_root(tmp_path):
    mount = tmp_path / "memory"
    v1(mount, 3 * GiB, GiB)
    proc = fake_proc(tmp_path, "4:memory:/docker/abc\n", [("/docker/abc", mount, "cgroup", "rw,memory")])
    assert cgroups.memory_left(proc) == 2 * GiB


def test_hybrid_the_smaller_of_v1_and_v2(tmp_path):
    v1(tmp_path / "memory" / "job", 3 * GiB, 0)
    v2(tmp_path / "unified" / "job", GiB, 0)
    mounts = [("/", tmp_path / "memory", "cgroup", "rw,memory"), ("/", tmp_path / "unified", "cgroup2", "rw")]
    assert cgroups.memory_left(fake_proc(tmp_path, "4:memory:/job\n0::/job\n", mounts)) == GiB


@pytest.mark.parametrize("limit", ["max", V1_NO_LIMIT, "junk"])
def test_no_limit_anywhere_is_none(tmp_path, limit):
    v2(tmp_path / "cgroup" / "a", limit, GiB)
    assert cgroups.memory_left(fake_proc(tmp_path, "0::/a\n", [("/", tmp_path / "cgroup", "cgroup2", "rw")])) is None


def test_no_proc_files_is_none(tmp_path):
    assert cgroups.memory_left(tmp_path / "nowhere") is None


def test_usage_over_the_limit_leaves_nothing(tmp_path):
    v2(tmp_path / "cgroup", GiB, 2 * GiB)
    assert cgroups.memory_left(fake_proc(tmp_path, "0::/\n", [("/", tmp_path / "cgroup", "cgroup2", "rw")])) == 0


def test_generates_memory_check_sees_a_v1_limit(tmp_path, monkeypatch):
    """What generate's check_memory compares its plan with is lowered to the v1 limit (the old check read only
    /sys/fs/cgroup/memory.max, so a 2 GiB v1 limit let a 5 GiB plan through to the OOM killer)."""
    v1(tmp_path / "memory" / "job", 2 * GiB, GiB // 2)
    monkeypatch.setattr(
        cgroups, "PROC_SELF", fake_proc(tmp_path, "4:memory:/job\n", [("/", tmp_path / "memory", "cgroup", "memory")])
    )
    assert generation.available_bytes(torch.device("cpu")) <= 2 * GiB - GiB // 2
