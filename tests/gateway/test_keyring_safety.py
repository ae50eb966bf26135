"""A lost keyring or KEK is refused loudly, never replaced silently.

A new keyring in place of a lost one would make every sealed decision unreadable and
turn erasures of the old subjects into no-ops; so the gateway will not create one over
a store that already holds decisions, and no command gives an existing keyring a new
KEK. Both say what to restore.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway_server import PROJECT
from tests.support.moto_server import free_port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_missing_kek_is_refused_not_replaced(sealed_trail, verdict_home):
    kek = verdict_home / "keyring" / "kek.key"
    kek.unlink()
    result = _run("subjects", "show", "person-01")
    assert result.returncode != 0
    assert "kek.key" in result.stderr and "restore" in result.stderr and "Traceback" not in result.stderr
    assert not kek.exists()  # no new KEK was made


def test_the_gateway_will_not_start_a_new_keyring_over_recorded_decisions(sealed_trail, verdict_home, tmp_path):
    elsewhere = tmp_path / "empty-keyring"
    result = _run("serve", "--port", str(free_port()), "--no-bootstrap", env={"VERDICT_KEYRING": str(elsewhere)})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "already holds decisions" in output and "VERDICT_KEYRING_CREATE" in output, output
    assert not (elsewhere / "keyring.sqlite").exists()


def test_sealing_cannot_be_switched_off_outside_benchmarks(verdict_home):
    """Personal data in clear on write-once storage could never be erased: seal=false is refused
    unless the process is an explicit benchmark (VERDICT_UNSAFE_BENCHMARK=1)."""
    result = _run("serve", "--port", str(free_port()), "--no-bootstrap", env={"VERDICT_SEAL": "false"})
    assert result.returncode == 2
    assert "seal=false is only allowed with VERDICT_UNSAFE_BENCHMARK=1" in result.stderr
    assert not (verdict_home / "store").exists()  # refused before anything was opened or written
