"""Training is reproducible to the byte, across processes, and records its provenance."""

from __future__ import annotations

import hashlib

import pytest

from tests.gateway.conftest import require_taiwan, run_verdict
from verdict.gateway.datasets import DATASETS, DatasetError, load_dataset
from verdict.gateway.manifest import decode_manifest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["german-credit", "taiwan-default"])
def test_training_twice_gives_identical_bytes_in_a_fresh_process(name, trained_dirs, tmp_path):
    if name == "taiwan-default":
        require_taiwan()
    first = trained_dirs[name]
    result = run_verdict("models", "train", name, "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    for file in ("model.pt2", "background.json"):
        assert _sha(tmp_path / "again" / file) == _sha(first / file), file
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (first / "manifest.json").read_bytes(), (
        _manifest_diff(first / "manifest.json", tmp_path / "again" / "manifest.json")
    )


def _manifest_diff(a, b) -> str:
    """Which fields differ (a source edit during the run changes source_sha256, for instance)."""
    import json

    def flat(value, path=""):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from flat(item, f"{path}.{key}")
        else:
            yield path, value

    left, right = dict(flat(json.loads(a.read_text()))), dict(flat(json.loads(b.read_text())))
    return "manifest fields differ: " + ", ".join(
        f"{k}: {left.get(k)!r} != {right.get(k)!r}"
        for k in sorted(set(left) | set(right))
        if left.get(k) != right.get(k)
    )


def test_manifest_records_provenance_and_metrics(trained_dirs):
    manifest = decode_manifest((trained_dirs["german-credit"] / "manifest.json").read_bytes())
    assert manifest.artifact_sha256 == _sha(trained_dirs["german-credit"] / "model.pt2")
    training = manifest.training
    assert training.dataset.sha256 == DATASETS["german-credit"].sha256
    assert training.code_commit == "uncommitted" or len(training.code_commit) == 40
    assert len(training.source_sha256) == 64 and len(training.environment_sha256) == 64
    assert 0.7 < training.metrics["auc_test"] <= 1.0
    assert training.metrics["cost_matrix_total_test"] >= 0
    assert len(manifest.inputs) == 20
    assert manifest.decision.threshold == pytest.approx(1 / 6)


def test_taiwan_manifest_has_23_attributes(trained_dirs):
    require_taiwan()
    manifest = decode_manifest((trained_dirs["taiwan-default"] / "manifest.json").read_bytes())
    assert len(manifest.inputs) == 23
    assert manifest.training.metrics["auc_test"] > 0.7


def test_altered_dataset_is_refused(tmp_path, monkeypatch):
    altered = tmp_path / "UCI_Credit_Card.csv"
    altered.write_text("ID,x\n1,2\n")
    monkeypatch.setenv("VERDICT_TAIWAN_DATA", str(altered))
    with pytest.raises(DatasetError, match="expected the published"):
        load_dataset("taiwan-default")


def test_missing_taiwan_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VERDICT_TAIWAN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="VERDICT_TAIWAN_DATA"):
        load_dataset("taiwan-default")


def test_train_cli_reports_missing_data_cleanly(tmp_path):
    result = run_verdict(
        "models",
        "train",
        "taiwan-default",
        "--out",
        str(tmp_path / "m"),
        env={"VERDICT_TAIWAN_DATA": str(tmp_path / "nowhere")},
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_unknown_recipe_is_a_usage_error(tmp_path):
    result = run_verdict("models", "train", "mnist", "--out", str(tmp_path / "m"))
    assert result.returncode == 2 and "german-credit" in result.stderr


def test_artifact_does_not_depend_on_where_the_code_lives(trained_dirs):
    """A validator retraining from another checkout must get the same sha256:
    no absolute paths or stack traces may be baked into the graph."""
    import zipfile

    from verdict.gateway.source import project_root

    with zipfile.ZipFile(trained_dirs["german-credit"] / "model.pt2") as archive:
        for name in archive.namelist():
            data = archive.read(name)
            assert str(project_root()).encode() not in data, name
            assert b"stack_trace" not in data, name
