"""The public Python API (docs/python-api.md): light to import, right in-process,
and working from an installed wheel exactly as the guide shows.

In-process: a real reference model registered and promoted in a real
filesystem store, a real decision appended and signed, verified, read back
and replayed. From the wheel: the project is built and installed into a
fresh virtualenv (its dependencies borrowed from the project's), and the
guide's examples run there, outside the repository, printing what the guide
says they print.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import verdict

PROJECT = Path(__file__).resolve().parents[1]
GUIDE = PROJECT / "docs" / "python-api.md"
_FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def guide_examples(text: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) per ```python block, in order; the expected output
    is the ```text block that follows it with nothing but blank lines between."""
    out: list[tuple[str, str | None]] = []
    previous_end = None
    for match in _FENCE.finditer(text):
        language, body = match.group(1), match.group(2)
        if language == "python":
            out.append((body, None))
        elif language == "text" and out and out[-1][1] is None and not text[previous_end : match.start()].strip():
            out[-1] = (out[-1][0], body)
        previous_end = match.end()
    return out


RUNNER = """\
import contextlib, io, json, sys
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
outputs = []
for i, code in enumerate(blocks):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, f"python-api.md block {i + 1}", "exec"), namespace)
    outputs.append(buffer.getvalue())
print(json.dumps(outputs))
"""


def run_guide(python: str, tmp: Path, env: dict[str, str]) -> list[str]:
    """Run every python block of the guide in one interpreter; each block's stdout."""
    examples = guide_examples(GUIDE.read_text())
    (tmp / "blocks.json").write_text(json.dumps([code for code, _ in examples]))
    (tmp / "runner.py").write_text(RUNNER)
    cwd = tmp / "cwd"
    cwd.mkdir()
    done = subprocess.run(
        [python, str(tmp / "runner.py"), str(tmp / "blocks.json")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Verdict settings (the guide passes everything explicitly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_") and k != "PYTHONPATH"}
    return {**env, **extra}


# --- import cost -----------------------------------------------------------------------------


def test_import_verdict_leaves_torch_out():
    code = (
        "import sys, verdict\n"
        "assert verdict.__version__ == '0.2.0'\n"
        "verdict.open_store, verdict.Store, verdict.trust_policy, verdict.TrustPolicyRequired, verdict.Decision\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_public_names_resolve_and_unknown_ones_do_not():
    for name in verdict.__all__:
        assert getattr(verdict, name) is not None
    with pytest.raises(AttributeError):
        verdict.DecisionService  # noqa: B018 - internal machinery is not exported


# --- in-process, from the source tree ------------------------------------------------------------


@pytest.fixture(scope="module")
def decided(tmp_path_factory, trained_dirs):
    """A store with the reference model registered and promoted and one decision, its gateway closed."""
    work = tmp_path_factory.mktemp("python-api")
    home = work / "home"
    store = verdict.open_store(work / "store")
    registry = verdict.ModelRegistry(store, home=home)
    registered = registry.register(trained_dirs["german-credit"])
    registry.promote(registered.name, registered.version)
    applicant = verdict.sample_applicants()[1]
    with verdict.Gateway(store, home=home) as gateway:
        decision = gateway.decide("german-credit", applicant, request_id="api-0001")
        again = gateway.decide("german-credit", applicant, request_id="api-0001")
        with pytest.raises(verdict.DecisionRefused) as conflict:
            gateway.decide("german-credit", verdict.sample_applicants()[2], request_id="api-0001")
        with pytest.raises(verdict.DecisionRefused) as unknown:
            gateway.decide("no-such-model", applicant)
    return {
        "work": work,
        "home": home,
        "store": store,
        "applicant": applicant,
        "decision": decision,
        "again": again,
        "conflict": conflict.value,
        "unknown": unknown.value,
        "policy": verdict.trust_policy(home),
    }


def test_the_decision_is_appended_signed_before_it_is_returned(decided):
    decision, store, policy = decided["decision"], decided["store"], decided["policy"]
    assert decision.decision in ("approve", "decline")
    assert decision.receipt.chain_id == "gateway-0"
    assert abs(decision.base_value + sum(decision.contributions.values()) - decision.score) < 1e-6
    assert decision.reasons and all(r.text for r in decision.reasons)
    # The record is really in the chain's segment objects, under the hash the receipt names.
    segments = (decided["work"] / "store" / "chains" / "gateway-0").rglob("*")
    assert any(decision.request_id.encode() in p.read_bytes() for p in segments if p.is_file())
    logged = store.read_decision(decision.request_id, trust=policy, home=decided["home"])
    assert logged.decision == decision
    assert logged.decision.receipt.record_hash == decision.receipt.record_hash
    assert logged.anchored and logged.checkpoint_key is not None
    assert logged.attributes == decided["applicant"]
    # Sealed in the record (docs/audit-format.md §3a): without home's keyring, no personal data.
    sealed = store.read_decision(decision.request_id, trust=policy)
    assert sealed.attributes is None and all(r.value == "" and r.text == "" for r in sealed.decision.reasons)
    result = store.verify(trust=policy)
    assert result.ok and result.anchored, result.failures
    assert "gateway-0" in result.chains


def test_idempotency_and_refusals(decided):
    again, decision = decided["again"], decided["decision"]
    assert again.idempotent_replay and again.receipt == decision.receipt and again.score == decision.score
    assert decided["conflict"].reason == "request-id-conflict"
    assert decided["unknown"].reason == "unknown-model"
    with verdict.Gateway(decided["store"], home=decided["home"], chain_id="gateway-1") as gateway:
        with pytest.raises(verdict.DecisionRefused) as invalid:
            gateway.decide("german-credit", {**decided["applicant"], "duration_months": "long"})
        with pytest.raises(verdict.DecisionRefused) as bad_id:
            gateway.decide("german-credit", decided["applicant"], request_id="no spaces allowed")
    assert invalid.value.reason == "invalid-attributes" and "attributes.duration_months" in invalid.value.fields
    assert bad_id.value.reason == "invalid-request"
    assert decided["store"].verify(trust=decided["policy"]).ok  # a refused decision left nothing behind


def test_verifying_without_a_trust_policy_is_refused_unless_asked_for(decided):
    store, policy = decided["store"], decided["policy"]
    for call in (store.verify, lambda: store.read_decision("api-0001")):
        with pytest.raises(verdict.TrustPolicyRequired):
            call()
    with pytest.raises(verdict.VerdictError):
        store.verify(trust=policy, unanchored=True)
    unanchored = store.verify(unanchored=True)
    assert unanchored.ok and not unanchored.anchored
    assert not store.read_decision("api-0001", unanchored=True).anchored
    (decided["work"] / "policy.json").write_bytes(policy.encode())
    assert store.verify(trust=decided["work"] / "policy.json").anchored


def test_a_foreign_trust_root_does_not_verify(decided, tmp_path):
    stranger = verdict.trust_policy(_make_home(tmp_path / "stranger"))
    assert not decided["store"].verify(trust=stranger).ok
    with pytest.raises(verdict.RecordNotVerified):
        decided["store"].read_decision("api-0001", trust=stranger)
    with pytest.raises(verdict.RecordNotVerified) as missing:
        decided["store"].read_decision("api-9999", trust=decided["policy"])
    assert missing.value.reason == "not_found"


def test_replay_is_identical_and_recorded(decided):
    store, policy = decided["store"], decided["policy"]
    replayed = store.replay("api-0001", trust=policy, home=decided["home"])
    assert replayed.verdict == "identical" and replayed.passed, replayed.why
    assert replayed.logged_score == replayed.replayed_score == decided["decision"].score
    assert replayed.anchored and replayed.report_key is not None
    assert [p.name for p in (decided["home"] / "replays").iterdir()] == [replayed.replay_id]  # progress in the home
    result = store.verify(trust=policy)
    assert result.ok and "replay-0" in result.chains
    missing = store.replay("api-9999", trust=policy, home=decided["home"])
    assert missing.verdict == "cannot_replay" and missing.reason == "not_found" and not missing.passed


def _make_home(home: Path) -> Path:
    from verdict._trust import signing_identity

    signing_identity(home)
    return home


# --- from an installed wheel -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_guide_runs_from_an_installed_wheel(tmp_path):
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, source / name)
    for name in ("verdict", "audit", "gateway", "replay"):
        shutil.copytree(PROJECT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=source,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("verdict_gateway-0.2.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"verdict", "verdict_gateway-0.2.0.dist-info"}
    assert "verdict/py.typed" in names
    assert "verdict/gateway/data/sample-applicants.jsonl" in names
    assert any(n.startswith("verdict/gateway/data/german-credit/") for n in names)
    assert {"verdict/audit/__init__.py", "verdict/replay/batch.py", "verdict/_gateway.py"} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    # Dependencies from the project's virtualenv: a plain path line adds its site-packages to
    # sys.path without running the .pth files there (the editable install's finder stays off).
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run(
        [python, "-c", "import verdict, verdict.gateway; print(verdict.__file__); print(verdict.gateway.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(venv), line

    outputs = run_guide(python, tmp_path, _clean_env())
    examples = guide_examples(GUIDE.read_text())
    assert len(examples) >= 6
    for i, ((code, expected), printed) in enumerate(zip(examples, outputs, strict=True), start=1):
        if expected is not None:
            assert printed == expected, f"block {i} printed:\n{printed}\nthe guide says:\n{expected}\n{code}"
