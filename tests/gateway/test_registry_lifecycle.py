"""What serves, and a version's standing (issue 17): registering never changes
routing; promotion refuses revoked versions, unacknowledged protected inputs
and (with a policy) unvalidated versions; status events and revocation are
signed, append-only and verify; the commands that touch no model never import
torch. Real registry, real store, real signatures, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import msgspec
import pytest

from tests.audit.helpers import signer
from tests.gateway.conftest import PROJECT, run_verdict
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store
from verdict.gateway.manifest import decode_manifest, encode_manifest
from verdict.gateway.model_files import MANIFEST_FILE
from verdict.gateway.registry import NoProductionVersion, Registry, RegistryError, VersionRevoked
from verdict.gateway.registry_log import RegistryLog


def _root() -> RootKey:
    return RootKey(signer(91))


@pytest.fixture
def registry(tmp_path) -> Registry:
    store = FilesystemStore(tmp_path / "store")
    return Registry(store, events=RegistryLog(store, signer(4), root=_root()))


def _variant(source, tmp_path, version: str, *, protect: tuple[str, ...] = ()):
    """The same model under another version (and optionally protected inputs): a new manifest, same blobs."""
    out = tmp_path / f"model-{version}"
    shutil.copytree(source, out)
    manifest = decode_manifest((out / MANIFEST_FILE).read_bytes())
    inputs = tuple(msgspec.structs.replace(s, protected=s.name in protect) for s in manifest.inputs)
    (out / MANIFEST_FILE).write_bytes(
        encode_manifest(msgspec.structs.replace(manifest, version=version, inputs=inputs))
    )
    return out


def test_registering_never_changes_which_version_serves(registry, trained_dirs, tmp_path):
    registry.register(trained_dirs["german-credit"])
    with pytest.raises(NoProductionVersion, match="promote one"):
        registry.resolve_default_version("german-credit")  # a first version serves once promoted
    registry.promote("german-credit", "1.0.0")
    registry.register(_variant(trained_dirs["german-credit"], tmp_path, "2.0.0"))
    assert registry.resolve_default_version("german-credit") == "1.0.0"
    registry.promote("german-credit", "2.0.0")
    assert registry.resolve_default_version("german-credit") == "2.0.0"


def test_revocation_stops_serving_is_final_and_verifies(registry, trained_dirs):
    registry.register(trained_dirs["german-credit"])
    registry.promote("german-credit", "1.0.0", by="ops")
    registry.set_status("german-credit", "1.0.0", "validated", by="model risk", note="MRM-1")
    event = registry.set_status("german-credit", "1.0.0", "revoked", by="incident 7", note="drift")
    with pytest.raises(VersionRevoked, match="revoked by incident 7") as raised:
        registry.resolve_default_version("german-credit")
    assert raised.value.event == event == registry.revocation("german-credit", "1.0.0")
    with pytest.raises(RegistryError, match="cannot promote"):
        registry.promote("german-credit", "1.0.0")
    with pytest.raises(RegistryError, match="already revoked"):
        registry.set_status("german-credit", "1.0.0", "revoked", by="again")
    assert [e.status for e in registry.status_history("german-credit", "1.0.0")] == ["validated", "revoked"]
    assert registry.validation_status("german-credit", "1.0.0").note == "MRM-1"
    assert registry.manifest("german-credit", "1.0.0").version == "1.0.0"  # still there, still replayable
    report = verify_store(registry.store, trust=_root().policy())
    assert report.ok, report.failures


def test_unknown_status_and_missing_author_are_refused(registry, trained_dirs):
    registry.register(trained_dirs["german-credit"])
    with pytest.raises(RegistryError, match="unknown status 'aproved'"):
        registry.set_status("german-credit", "1.0.0", "aproved", by="x")
    with pytest.raises(RegistryError, match="--by"):
        registry.set_status("german-credit", "1.0.0", "validated", by=" ")
    assert registry.status_history("german-credit", "1.0.0") == []


def test_protected_inputs_need_a_recorded_justification(registry, trained_dirs, tmp_path):
    registry.register(
        _variant(trained_dirs["german-credit"], tmp_path, "3.0.0", protect=("age_years", "foreign_worker"))
    )
    with pytest.raises(RegistryError, match="protected attribute\\(s\\) age_years, foreign_worker"):
        registry.promote("german-credit", "3.0.0")
    assert registry.alias("german-credit", "production") is None
    registry.promote("german-credit", "3.0.0", by="cro", justification="age is a permitted factor under Reg B")
    records = _registry_bodies(registry)
    assert records[-1]["event"] == "promotion"
    assert records[-1]["reason"] == "protected attributes acknowledged: age is a permitted factor under Reg B"


def test_a_promotion_policy_requires_the_validation_status(registry, trained_dirs):
    registry.register(trained_dirs["german-credit"])
    with pytest.raises(RegistryError, match=r"requires validation status 'validated'.*'none recorded'"):
        registry.promote("german-credit", "1.0.0", require_status="validated")
    registry.set_status("german-credit", "1.0.0", "validated_with_conditions", by="mrm")
    with pytest.raises(RegistryError, match="'validated_with_conditions'"):
        registry.promote("german-credit", "1.0.0", require_status="validated")
    registry.set_status("german-credit", "1.0.0", "validated", by="mrm")
    assert registry.promote("german-credit", "1.0.0", require_status="validated").version == "1.0.0"


def _registry_bodies(registry: Registry) -> list[dict]:
    from verdict.audit.records import iter_lines, split_line  # lazy: only this helper reads raw segments

    bodies = []
    for key in sorted(registry.store.list_keys("chains/registry/segments/")):
        for line in iter_lines(registry.store.get(key)):
            body = json.loads(split_line(line)[0])["body"]
            if body["kind"] == "registry":
                bodies.append(body)
    return bodies


def test_lifecycle_commands_through_the_cli(verdict_home, trained_dirs):
    env = {"VERDICT_HOME": str(verdict_home)}
    registered = run_verdict("models", "register", str(trained_dirs["german-credit"]), env=env)
    assert registered.returncode == 0, registered.stderr
    assert "serves nothing until promoted: verdict models promote german-credit:1.0.0" in registered.stdout
    status = run_verdict("models", "status", "german-credit:1.0.0", "validated", "--by", "mrm", "--note", "ok", env=env)
    assert status.returncode == 0 and "is now validated" in status.stdout, status.stderr
    promoted = run_verdict("models", "promote", "german-credit:1.0.0", "--require-status", "validated", env=env)
    assert promoted.returncode == 0, promoted.stderr
    revoked = run_verdict("models", "revoke", "german-credit:1.0.0", "--reason", "drift", "--by", "ops", env=env)
    assert revoked.returncode == 0 and "no longer serves" in revoked.stdout
    assert "is the production version" in revoked.stderr
    shown = run_verdict("models", "show", "german-credit:1.0.0", env=env)
    assert "validated by mrm (ok)" in shown.stdout and "revoked by ops (drift)" in shown.stdout
    assert "validation report: 24 of 24 checks passed at" in " ".join(shown.stdout.split())
    listed = run_verdict("models", "list", "--json", env=env)
    assert json.loads(listed.stdout) == [
        {"name": "german-credit", "versions": ["1.0.0"], "production": "1.0.0", "revoked": ["1.0.0"]}
    ]
    bad = run_verdict("models", "status", "german-credit:1.0.0", "revoked", "--by", "x", env=env)
    assert bad.returncode == 2 and "use `verdict models revoke`" in bad.stderr
    verified = run_verdict("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_commands_that_touch_no_model_never_import_torch(verdict_home, trained_dirs):
    """`models list/show/promote/revoke/status`, `audit verify` and `keys list` start without torch
    (an operator revoking a version in an incident should not wait 15 s for an import)."""
    env = {"VERDICT_HOME": str(verdict_home)}
    assert run_verdict("models", "register", str(trained_dirs["german-credit"]), env=env).returncode == 0
    commands = [
        ["models", "list"],
        ["models", "show", "german-credit:1.0.0"],
        ["models", "status", "german-credit:1.0.0", "validated", "--by", "mrm"],
        ["models", "promote", "german-credit:1.0.0"],
        ["models", "revoke", "german-credit:1.0.0", "--reason", "test", "--by", "ops"],
        ["audit", "verify"],
        ["keys", "list"],
    ]
    probe = textwrap.dedent(
        """
        import json, sys
        from verdict.gateway.cli import main
        results = []
        for argv in json.loads(sys.argv[1]):
            sys.argv = ["verdict", *argv]
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
            results.append([argv, code, sorted(m for m in ("torch", "shap") if m in sys.modules)])
        print("RESULTS " + json.dumps(results))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(commands)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=PROJECT,
        timeout=300,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))
    assert [(argv, code) for argv, code, _ in results] == [(argv, 0) for argv in commands], done.stderr
    assert [loaded for _, _, loaded in results] == [[]] * len(commands)
