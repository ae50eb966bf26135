"""``--rebuild-env`` end to end: a fresh virtualenv from the recorded pins, the replay inside it.

The slowest test of the replay suite (a virtualenv with every recorded pin,
torch included, from pip's cache: about two minutes here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from tests.replay.conftest import cli, report_of
from verdict.audit.reader import read_decision
from verdict.audit.stores import open_store
from verdict.replay.environment import fetch


@pytest.fixture
def envs_dir(tmp_path, monkeypatch):
    """Where the virtualenv is built; removed afterwards (it holds torch: gigabytes)."""
    monkeypatch.setenv("VERDICT_REPLAY_ENVS", str(tmp_path / "envs"))
    yield tmp_path / "envs"
    shutil.rmtree(tmp_path / "envs", ignore_errors=True)


@pytest.mark.slow
def test_replay_inside_a_virtualenv_rebuilt_from_the_recorded_pins(at_trail, tmp_path, envs_dir):
    ids = [at_trail.production[0], at_trail.tight[1]]
    result = cli(*ids, "--rebuild-env", "--html", str(tmp_path / "report.html"))
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    assert [d["verdict"] for d in report["decisions"]] == ["identical", "identical"]

    environment = report["environment"]
    assert environment["mode"] == "rebuilt"
    (rebuilt,) = environment["rebuilt"]
    store = open_store(at_trail.store_url)
    recorded_sha = read_decision(store, ids[0]).body.environment_sha256
    recorded = fetch(store, recorded_sha)
    venv = Path(rebuilt["venv"])
    assert venv.parent == tmp_path / "envs" and (venv / "bin" / "python").exists() and (venv / ".complete").exists()
    assert rebuilt["recorded_environment"] == recorded_sha
    assert rebuilt["packages_pinned"] == len(
        [p for p in recorded["packages"] if p not in ("verdict", "verdict-gateway")]
    )
    assert rebuilt["python"] == recorded["python"] and rebuilt["reused"] is False
    assert rebuilt["project_source_sha256"] == recorded["project_source_sha256"]
    pins = (venv / "pins.txt").read_text().splitlines()
    assert f"torch=={recorded['packages']['torch']}" in pins and f"numpy=={recorded['packages']['numpy']}" in pins
    # The replay ran in the rebuilt environment, and it is the recorded one, bit for bit of its fingerprint.
    assert rebuilt["fingerprint_sha256"] in environment["fingerprints"]
    assert rebuilt["fingerprint_identical_to_recorded"] is True
    (entry,) = report["recorded_environments"]
    assert entry["identical"] is True
    assert "rebuilt" in (tmp_path / "report.html").read_text()

    # A second replay of the same environment reuses the built virtualenv.
    again = cli(ids[0], "--rebuild-env", "--score-only")
    assert again.exit_code == 0, again.output
    (reused,) = report_of(again)["report"]["environment"]["rebuilt"]
    assert reused["reused"] is True and reused["venv"] == rebuilt["venv"]
    assert msgspec.json.decode((venv / ".complete").read_bytes())["build_seconds"] > 0
