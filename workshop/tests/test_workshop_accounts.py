"""workshop/workshop.sh touches only the accounts and groups it made (issue 23, item 2), tried as the box's
other accounts would meet it: an existing group named as the workshop's, an existing account added to a workshop
group. Only `users` and `remove` run (no hub, no venv): a few seconds. Every account and group the test made is
removed afterwards."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes system accounts and groups (CI runs as root)")

REPO = Path(__file__).resolve().parents[2]


def shadow(name: str) -> str:
    """The account's password hash: what `users` would change."""
    return next(line for line in Path("/etc/shadow").read_text().splitlines() if line.startswith(f"{name}:"))


def groups_of(name: str) -> set[str]:
    return set(subprocess.run(["id", "-nG", name], capture_output=True, text=True, check=True).stdout.split())


@pytest.fixture
def box():
    """Names no account or group of the machine has, a workshop folder, and `workshop.sh` run with them; every
    account and group made under those names removed afterwards, whatever the test did."""
    tag = secrets.token_hex(3)
    names = {
        "group": f"smk-t{tag}", "admin_group": f"smk-t{tag}-adm", "other_group": f"smk-t{tag}-box",
        "ada": f"ada-{tag}", "bob": f"bob-{tag}", "resident": f"res-{tag}",
    }  # fmt: skip
    workshop = Path(tempfile.mkdtemp(prefix="smolkit-workshop-"))

    def run(*args: str, group: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "SMOLKIT_WORKSHOP_DIR": str(workshop), "SMOLKIT_HUB_GROUP": group or names["group"],
               "SMOLKIT_HUB_ADMIN_GROUP": names["admin_group"]}  # fmt: skip
        return subprocess.run(["bash", "workshop/workshop.sh", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    try:
        yield names, run
    finally:
        for key in ("ada", "bob", "resident"):
            subprocess.run(["userdel", "--remove", names[key]], capture_output=True)
        for key in ("group", "admin_group", "other_group"):
            subprocess.run(["groupdel", names[key]], capture_output=True)
        shutil.rmtree(workshop, ignore_errors=True)
        for key, name in names.items():
            with pytest.raises(KeyError):
                (grp.getgrnam if "group" in key else pwd.getpwnam)(name)


def resident_account(name: str, group: str | None = None) -> None:
    """An account of the box that the workshop did not make, with a password, maybe in ``group``."""
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{secrets.token_hex(8)}", text=True, check=True)
    if group:
        subprocess.run(["usermod", "--append", "--groups", group, name], check=True)


def test_an_existing_group_is_refused_and_its_members_untouched(box):
    names, run = box
    subprocess.run(["groupadd", names["other_group"]], check=True)
    resident_account(names["resident"], names["other_group"])
    before = shadow(names["resident"])
    made = run("users", names["ada"], group=names["other_group"])
    assert made.returncode != 0 and f"group '{names['other_group']}' already exists" in made.stderr, made.stderr
    assert "SMOLKIT_HUB_GROUP" in made.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(names["ada"])  # refused before anything was created
    for args in (("users", names["resident"]), ("remove", "--all"), ("remove", names["resident"])):
        run(*args, group=names["other_group"])
    assert shadow(names["resident"]) == before  # the password was not reset
    assert grp.getgrnam(names["other_group"]) and pwd.getpwnam(names["resident"])  # nothing deleted


def test_an_account_added_to_a_workshop_group_is_not_the_workshops(box):
    names, run = box
    assert run("users", names["ada"]).returncode == 0
    resident_account(names["resident"], names["group"])  # someone adds a box account to the workshop's group
    before = shadow(names["resident"])
    again = run("users", names["resident"])
    assert again.returncode != 0 and "not a workshop account" in again.stderr
    assert run("remove", names["resident"]).returncode != 0
    removed = run("remove", "--all")
    assert removed.returncode == 0, removed.stderr
    assert shadow(names["resident"]) == before and pwd.getpwnam(names["resident"])
    with pytest.raises(KeyError):
        pwd.getpwnam(names["ada"])
    assert grp.getgrnam(names["group"])  # kept: a member the workshop did not make is still in it


def test_remove_all_removes_what_users_made(box):
    names, run = box
    assert run("users", names["ada"], names["bob"]).returncode == 0
    assert run("remove", "--all").returncode == 0
    for key in ("ada", "bob"):
        with pytest.raises(KeyError):
            pwd.getpwnam(names[key])
    for key in ("group", "admin_group"):
        with pytest.raises(KeyError):
            grp.getgrnam(names[key])


def test_a_name_given_twice_prints_no_stale_password(box):
    names, run = box
    made = run("users", names["ada"], names["ada"])
    lines = [line for line in made.stdout.splitlines() if line.startswith(names["ada"])]
    assert made.returncode != 0 and "named twice" in made.stderr and lines == []


def test_admin_makes_an_existing_participant_a_facilitator(box):
    names, run = box
    first = run("users", names["ada"])
    assert first.returncode == 0 and names["admin_group"] not in groups_of(names["ada"])
    promoted = run("users", "--admin", names["ada"])
    assert promoted.returncode == 0, promoted.stderr
    assert names["admin_group"] in groups_of(names["ada"])
