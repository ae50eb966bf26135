"""Real reference models, trained once per test session from the real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tests.audit.golden.make_golden import decision
from verdict.audit.chain import ChainWriter
from verdict.audit.personal_data import PersonalData, configured_keyring
from verdict.audit.records import PlainInputs, utc_now
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import FilesystemStore, open_store
from verdict.audit.trust import configured_root
from verdict.gateway.datasets import DATASETS
from verdict.gateway.registry import Registry

PROJECT = Path(__file__).resolve().parents[2]


def require_taiwan() -> None:
    """The Taiwan file lives in ../shared; CI has it, a user's machine may not."""
    if not DATASETS["taiwan-default"].path().exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have ../shared/data/taiwan-default (or VERDICT_TAIWAN_DATA)")
        pytest.skip("Taiwan data set not available (set VERDICT_TAIWAN_DATA)")


@pytest.fixture(scope="session")
def registry(tmp_path_factory, trained_dirs) -> Registry:
    reg = Registry(FilesystemStore(tmp_path_factory.mktemp("registry-store")))
    for directory in trained_dirs.values():
        manifest, _ = reg.register(directory)
        reg.promote(manifest.name, manifest.version, by="test-setup")  # unpinned requests serve production only
    return reg


@pytest.fixture(scope="session")
def german_model(registry):
    from verdict.gateway.runtime import load_model

    return load_model(registry, "german-credit")


@pytest.fixture(scope="session")
def taiwan_model(registry, trained_dirs):
    from verdict.gateway.runtime import load_model

    require_taiwan()
    return load_model(registry, "taiwan-default")


def run_verdict(
    *args: str, env: dict | None = None, input: str | None = None, cwd: Path = PROJECT
) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "verdict", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory, trained_dirs):
    """One real `verdict serve` process for the HTTP tests that share it."""
    from tests.support.gateway_server import GatewayServer, prepare_home

    home = tmp_path_factory.mktemp("gateway-home")
    tokens = prepare_home(home, trained_dirs["german-credit"])
    server = GatewayServer(home).start()
    server.tokens = tokens
    yield server
    server.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SEALED_SUBJECTS = [f"person-{n:02d}" for n in range(8)]
"""The subjects of ``sealed_trail``: two decisions each, request ids ``kill-000``..."""


@pytest.fixture
def sealed_trail(verdict_home):
    """A store with two sealed decisions per subject, written through the real sealing path."""
    store = open_store((verdict_home / "store").as_uri())
    personal = PersonalData(configured_keyring())
    signer, _ = FileKeyStore.default().init()
    root = configured_root(create=True)
    bodies = []
    for n, subject in enumerate(SEALED_SUBJECTS * 2):
        inputs = PlainInputs(attributes={"duration": 6 + n, "purpose": "A43"})
        bodies.append(
            msgspec.structs.replace(decision(f"kill-{n:03d}", inputs, subject_id=subject), decided_at=utc_now())
        )
    with ChainWriter.open(store, "gateway-0", signer, root=root, lease=None) as writer:
        writer.append_batch(personal.seal_all(bodies, now=utc_now()))
    personal.keyring.close()
    return store
