"""The workshop's tests use the kit's test plumbing: tests/servers.py (start, stop and wait for servers)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
