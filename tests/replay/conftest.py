"""A real trail for replay tests: decisions made through a real `verdict serve`.

One session-scoped gateway home: the reference model registered and promoted,
plus the same artifact registered as a second version whose manifest fixes a
very tight replay tolerance (``1e-12`` absolute, ``0`` relative) so that a
one-ulp difference is honestly out of tolerance. Decisions for both versions
go through the HTTP API of a real server process, which is then stopped (its
shutdown writes the final signed checkpoint, so every record is provable).

Tests that damage the trail work on a copy (:func:`trail_copy`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest

TIGHT_VERSION = "1.0.0-tight"
DECISIONS_PER_VERSION = 120


@dataclass
class Trail:
    home: Path
    tokens: dict[str, str]
    production: list[str] = field(default_factory=list)
    tight: list[str] = field(default_factory=list)
    version: str = "1.0.0"

    @property
    def store_url(self) -> str:
        return (self.home / "store").as_uri()

    @property
    def store_dir(self) -> Path:
        return self.home / "store"


def _tight_model_dir(source: Path, dest: Path) -> Path:
    """The same artifact and background, registered as another version with a tight tolerance."""
    from verdict.gateway.manifest import ReplayTolerance, decode_manifest, encode_manifest
    from verdict.gateway.training import MANIFEST_FILE

    shutil.copytree(source, dest)
    manifest = decode_manifest((dest / MANIFEST_FILE).read_bytes())
    tight = msgspec.structs.replace(
        manifest, version=TIGHT_VERSION, tolerance=ReplayTolerance(absolute=1e-12, relative=0.0)
    )
    (dest / MANIFEST_FILE).write_bytes(encode_manifest(tight))
    return dest


def post_decisions(url: str, token: str, bodies: list[dict]) -> list[dict]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for body in bodies:
            response = client.post("/v1/decisions", json=body)
            assert response.status_code == 200, response.text
            out.append(response.json())
    return out


@pytest.fixture(scope="session")
def replay_trail(tmp_path_factory, trained_dirs) -> Trail:
    from tests.support.gateway_server import GatewayServer, prepare_home
    from verdict.audit.stores import open_store
    from verdict.gateway.datasets import load_dataset
    from verdict.gateway.registry import Registry

    home = tmp_path_factory.mktemp("replay-home")
    tokens = prepare_home(home, trained_dirs["german-credit"])
    Registry(open_store((home / "store").as_uri())).register(
        _tight_model_dir(trained_dirs["german-credit"], tmp_path_factory.mktemp("tight") / "model")
    )
    rows = load_dataset("german-credit").rows
    trail = Trail(home=home, tokens=tokens)
    server = GatewayServer(home).start()
    try:
        bodies = [
            {"model": "german-credit", "request_id": f"rp-prod-{i:05d}", "attributes": rows[i]}
            for i in range(DECISIONS_PER_VERSION)
        ]
        bodies += [
            {
                "model": "german-credit",
                "version": TIGHT_VERSION,
                "request_id": f"rp-tight-{i:05d}",
                "attributes": rows[i],
            }
            for i in range(DECISIONS_PER_VERSION)
        ]
        answers = post_decisions(server.url, tokens["client"], bodies)
    finally:
        server.stop()
    trail.production = [a["request_id"] for a in answers if a["model"]["version"] == "1.0.0"]
    trail.tight = [a["request_id"] for a in answers if a["model"]["version"] == TIGHT_VERSION]
    assert len(trail.production) == len(trail.tight) == DECISIONS_PER_VERSION
    return trail


@pytest.fixture
def at_trail(replay_trail, monkeypatch) -> Trail:
    """The shared trail as this process's VERDICT_HOME (replays write their reports into it)."""
    monkeypatch.setenv("VERDICT_HOME", str(replay_trail.home))
    monkeypatch.delenv("VERDICT_STORE", raising=False)
    return replay_trail


@pytest.fixture
def trail_copy(replay_trail, tmp_path, monkeypatch) -> Trail:
    """A private copy of the trail (to tamper with), as VERDICT_HOME."""
    home = tmp_path / "home"
    shutil.copytree(replay_trail.home, home, ignore=shutil.ignore_patterns("replays", "server-*.log"))
    monkeypatch.setenv("VERDICT_HOME", str(home))
    monkeypatch.delenv("VERDICT_STORE", raising=False)
    return Trail(
        home=home, tokens=replay_trail.tokens, production=list(replay_trail.production), tight=list(replay_trail.tight)
    )


def writable(path: Path) -> Path:
    """WORM files are read-only; a tamper test (root, like an attacker) makes one writable."""
    path.chmod(0o644)
    return path


def cli(*args: str):
    """`verdict replay ...` in this process (exit code, output)."""
    from typer.testing import CliRunner

    from verdict.replay.cli import replay_app

    return CliRunner().invoke(replay_app, ["--no-progress", *args], catch_exceptions=False)


def report_of(result) -> dict:
    """The signed report a CLI run wrote (its JSON path is printed)."""
    for line in (getattr(result, "output", None) or result.stdout).splitlines():
        if line.startswith("JSON report: "):
            return msgspec.json.decode(Path(line.removeprefix("JSON report: ").strip()).read_bytes())
    raise AssertionError(f"no JSON report in the output:\n{result.output}")
