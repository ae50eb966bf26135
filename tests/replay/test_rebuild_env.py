"""``--rebuild-env`` end to end: a fresh virtualenv from the recorded pins, the replay inside it.

The slowest test of the replay suite: a virtualenv with every recorded pin,
torch included. pip installs them offline (``PIP_NO_INDEX``) from a wheelhouse
of this very environment's distributions, the ones the trail's gateway ran
with: nothing is fetched from the network at test time, and the pins are
the recorded ones to the file.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import sys
import zipfile
from importlib import metadata
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


@pytest.fixture
def offline_pins(tmp_path, monkeypatch):
    """pip in the rebuilt virtualenv finds the recorded pins in a local wheelhouse and nowhere else.

    Why: from an index, the pins took pip a minute and a half here (network, then unzipping),
    and the tests must not depend on the network. The wheels are this environment's installed
    distributions packed back (stored, not compressed: seconds), the ones the trail's gateway
    ran with; a pin missing from them fails the rebuild, and so this test. Removed afterwards
    (gigabytes)."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = _canonical(dist.metadata["Name"] or "")
        if name and name not in seen and name not in ("verdict", "verdict-gateway"):
            seen.add(name)
            _pack_wheel(dist, house)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    yield house
    shutil.rmtree(house, ignore_errors=True)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pack_wheel(dist: metadata.Distribution, house: Path) -> None:
    """An installed distribution back as a wheel: the files its RECORD lists (bytecode and pip's
    install markers left out), scripts that are not entry points and data under ``<name>.data/``."""
    files = dist.files or []
    info = next(
        Path(dist.locate_file(f)).parent for f in files if f.name == "METADATA" and f.parent.suffix == ".dist-info"
    )
    stem, prefix = info.name.removesuffix(".dist-info"), Path(sys.prefix)
    tags = [
        line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines() if line[:4] == "Tag:"
    ]
    tag = "-".join(
        ".".join(sorted(set(part))) for part in zip(*(t.split("-") for t in tags or ["py3-none-any"]), strict=True)
    )
    entry_points = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    name = re.sub(r"[^\w\d.]+", "_", dist.metadata["Name"])
    rows = []
    with zipfile.ZipFile(house / f"{name}-{dist.version}-{tag}.whl", "w", zipfile.ZIP_STORED) as wheel:
        for file in files:
            path = Path(dist.locate_file(file))
            if path.suffix == ".pyc" or not path.is_file():
                continue
            if file.parts[0] != "..":
                if path.parent == info and path.name in ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json"):
                    continue  # pip writes its own
                wheel.write(path, file.as_posix())
                rows.append([file.as_posix(), f"{file.hash.mode}={file.hash.value}" if file.hash else "", file.size])
            elif path.parent.resolve() != (prefix / "bin").resolve():
                arcname = f"{stem}.data/data/{path.resolve().relative_to(prefix.resolve()).as_posix()}"
                wheel.write(path, arcname)
                rows.append([arcname, "", ""])
            elif path.name not in entry_points:  # entry points: pip writes them anew
                script = path.read_bytes()
                head, _, rest = script.partition(b"\n")
                if head.startswith(b"#!") and b"python" in head:
                    script = b"#!python\n" + rest  # pip points it at the new venv's python
                wheel.writestr(f"{stem}.data/scripts/{path.name}", script)
                rows.append([f"{stem}.data/scripts/{path.name}", "", ""])
        record = io.StringIO()
        csv.writer(record, lineterminator="\n").writerows([*rows, [f"{info.name}/RECORD", "", ""]])
        wheel.writestr(f"{info.name}/RECORD", record.getvalue())


@pytest.mark.slow
def test_replay_inside_a_virtualenv_rebuilt_from_the_recorded_pins(at_trail, tmp_path, envs_dir, offline_pins):
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
