"""workshop/gpu_split.py and what jupyterhub_config.py makes of it: on a box whose (stand-in) nvidia-smi reports a
GPU, the hub makes one read-only seat per participant and gives each kernel a share that leaves every seat room for
its context; with a device file (MIG), shares of each device and no seats; on a CPU box, neither. The kernels' side
(taking a seat) is tests/test_gpu_seats.py; the GPU itself, bench/RESULTS.md."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from test_mps_service import hub_config  # this folder's neighbour: the hub's config loaded as root, stand-ins on PATH

from smolkit.testing import load_script

gpu_split = load_script(Path(__file__).resolve().parents[1] / "gpu_split.py")
H100_MIB = 81559  # what nvidia-smi reports for an H100 80GB HBM3


def fake_nvidia_smi(folder: Path, answer: str, rc: int = 0) -> Path:
    """An `nvidia-smi` in ``folder`` that prints ``answer`` and exits ``rc``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{answer}'\nexit {rc}\n")
    script.chmod(0o755)
    return script


def test_the_gpu_memory_is_read_from_the_driver_and_none_without_one(tmp_path):
    assert gpu_split.gpu_total_bytes(str(fake_nvidia_smi(tmp_path / "a", str(H100_MIB)))) == H100_MIB * 2**20
    assert gpu_split.gpu_total_bytes(str(fake_nvidia_smi(tmp_path / "b", "No devices were found", rc=6))) is None
    assert gpu_split.gpu_total_bytes(str(fake_nvidia_smi(tmp_path / "c", "[N/A]"))) is None
    assert gpu_split.gpu_total_bytes(str(tmp_path / "missing")) is None


def test_seats_are_read_only_files_and_a_smaller_hub_has_fewer(tmp_path):
    folder = gpu_split.make_seats(tmp_path / "seats", 3)
    assert sorted(p.name for p in folder.iterdir()) == ["seat-000", "seat-001", "seat-002"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o444}
    gpu_split.make_seats(folder, 2)
    assert sorted(p.name for p in folder.iterdir()) == ["seat-000", "seat-001"]
    with pytest.raises(ValueError, match="at least one seat, got 0"):
        gpu_split.make_seats(folder, 0)


def test_every_seat_keeps_room_for_its_share_and_its_context():
    total, context = 85 * 10**9, 0.9e9
    for seats in (1, 8, 32, 40, 80):
        fraction = gpu_split.kernel_fraction(total, seats, context)
        assert seats * (fraction * total + context) == pytest.approx(gpu_split.USE * total)
    need = 0.94e9
    allowed = gpu_split.seats_allowed(total, need, context)
    assert gpu_split.kernel_fraction(total, allowed, context) * total >= gpu_split.HEADROOM * need
    assert gpu_split.kernel_fraction(total, allowed + 1, context) * total < gpu_split.HEADROOM * need


def gpu_box(monkeypatch, tmp_path: Path, mib: int = H100_MIB) -> None:
    """A stand-in nvidia-smi reporting a GPU of ``mib`` first on PATH."""
    fake_nvidia_smi(tmp_path / "driver", str(mib))
    monkeypatch.setenv("PATH", f"{tmp_path / 'driver'}:{Path('/usr/bin')}:{Path('/bin')}")


def test_on_a_shared_gpu_the_hub_makes_a_seat_per_participant_and_splits_what_is_left(monkeypatch, tmp_path):
    gpu_box(monkeypatch, tmp_path)
    c = hub_config(monkeypatch, tmp_path / "hub", SMOLKIT_HUB_MAX_USERS="32", SMOLKIT_HUB_MPS="off")
    seats = Path(c.Spawner.environment["SMOLKIT_GPU_SEATS"])
    assert seats == tmp_path / "hub" / "gpu-seats" and len(list(seats.iterdir())) == 32
    assert {(p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in seats.iterdir()} == {(0, 0o444)}
    expected = gpu_split.kernel_fraction(H100_MIB * 2**20, 32, 1e9)
    assert c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] == f"{expected:.4g}"
    c = hub_config(monkeypatch, tmp_path / "hub", SMOLKIT_HUB_MAX_USERS="20", SMOLKIT_HUB_MPS="off",
                   SMOLKIT_HUB_GPU_CONTEXT_GB="0.9")  # a restart with another setting  # fmt: skip
    assert len(list(seats.iterdir())) == 20
    expected = gpu_split.kernel_fraction(H100_MIB * 2**20, 20, 0.9e9)
    assert c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] == f"{expected:.4g}"


def test_more_participants_than_the_gpu_has_room_for_is_refused_at_start(monkeypatch, tmp_path):
    gpu_box(monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match=r"SMOLKIT_HUB_MAX_USERS=80 is too many for this GPU: 80 kernels do not fit"):
        hub_config(monkeypatch, tmp_path / "hub", SMOLKIT_HUB_MAX_USERS="80", SMOLKIT_HUB_MPS="off")
    with pytest.raises(SystemExit, match=r"SMOLKIT_HUB_GPU_CONTEXT_GB must be at least 0, got '-1'"):
        hub_config(monkeypatch, tmp_path / "again", SMOLKIT_HUB_GPU_CONTEXT_GB="-1", SMOLKIT_HUB_MPS="off")


def test_with_a_device_file_each_device_is_split_among_those_it_names_and_no_seats(monkeypatch, tmp_path):
    gpu_box(monkeypatch, tmp_path)
    devices = tmp_path / "devices"
    devices.write_text("ada MIG-aaa\nbo MIG-aaa\ncy MIG-ccc\n")
    c = hub_config(monkeypatch, tmp_path / "hub", SMOLKIT_HUB_GPU_DEVICES=str(devices), SMOLKIT_HUB_MPS="off")
    assert "SMOLKIT_GPU_SEATS" not in c.Spawner.environment
    share = c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"]

    class Spawner:
        def __init__(self, name):
            self.user = type("User", (), {"name": name})

    assert [share(Spawner(name)) for name in ("ada", "cy")] == [f"{gpu_split.USE / 2:.4g}", f"{gpu_split.USE:.4g}"]


def test_on_a_box_without_a_gpu_there_are_no_seats(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    c = hub_config(monkeypatch, tmp_path / "hub", SMOLKIT_HUB_MAX_USERS="4", SMOLKIT_HUB_MPS="off")
    assert "SMOLKIT_GPU_SEATS" not in c.Spawner.environment
    assert c.Spawner.environment["SMOLKIT_GPU_MEMORY_FRACTION"] == f"{gpu_split.USE / 4:.4g}"


def test_the_seats_for_bigger_kernels_are_printed_as_settings(capsys):
    """A session whose kernels hold more than the bench's (notebook 11: SmolVLM beside the embedded model)."""
    assert gpu_split.main(["--torch-gb", "2.5", "--context-gb", "0.9", "--total-gb", "85.5"]) == 0
    printed = capsys.readouterr().out
    assert "holds 19 kernels" in printed and "SMOLKIT_HUB_MAX_USERS=19 SMOLKIT_HUB_GPU_CONTEXT_GB=0.9" in printed
    share = gpu_split.kernel_fraction(85.5e9, 19, 0.9e9) * 85.5e9
    assert share >= gpu_split.HEADROOM * 2.5e9 and f"a share of {share / 1e9:.2f} GB" in printed
    assert gpu_split.main(["--torch-gb", "100", "--total-gb", "80"]) == 1
    assert "holds no kernel" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--torch-gb", "0"], ["--torch-gb", "nan"], ["--torch-gb", "1", "--total-gb", "-8"]])
def test_a_bad_figure_is_named(argv, capsys):
    with pytest.raises(SystemExit):
        gpu_split.main(argv)
    assert "must be a positive number of GB" in capsys.readouterr().err
