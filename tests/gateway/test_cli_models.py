"""The models CLI as a user runs it: a fresh process per command."""

from __future__ import annotations

import json
import shutil

import msgspec

from tests.gateway.conftest import run_verdict
from verdict.audit.stores import FilesystemStore
from verdict.gateway.datasets import load_dataset
from verdict.gateway.manifest import decode_manifest, encode_manifest
from verdict.gateway.model_files import MANIFEST_FILE
from verdict.gateway.registry import Registry


def test_register_list_show_promote(trained_dirs, tmp_path):
    env = {"VERDICT_HOME": str(tmp_path / "home")}
    directory = str(trained_dirs["german-credit"])
    first = run_verdict("models", "register", directory, env=env)
    assert first.returncode == 0 and "registered german-credit:1.0.0" in first.stdout
    again = run_verdict("models", "register", directory, env=env)
    assert again.returncode == 0 and "already registered" in again.stdout
    listed = json.loads(run_verdict("models", "list", "--json", env=env).stdout)
    assert listed == [{"name": "german-credit", "versions": ["1.0.0"], "production": None, "revoked": []}]
    promoted = run_verdict("models", "promote", "german-credit:1.0.0", env=env)
    assert promoted.returncode == 0
    shown = run_verdict("models", "show", "german-credit", "--json", env=env)
    manifest = json.loads(shown.stdout)
    assert manifest["name"] == "german-credit" and len(manifest["inputs"]) == 20
    for attribute in manifest["inputs"]:
        assert {"name", "kind", "label"} <= attribute.keys()
        assert attribute["kind"] in ("integer", "number", "category")
        if attribute["kind"] == "category":
            assert attribute["categories"]
        else:
            assert "minimum" in attribute and "maximum" in attribute
    assert (tmp_path / "home" / "store" / "models").is_dir()


def test_register_promote_if_unset_promotes_once_and_never_replaces(registry, trained_dirs, tmp_path):
    """What a KServe runtime runs at every start (deploy/kubernetes/kserve): register the model
    directory it was handed, promote it only while the model has no production version."""
    # A store where german-credit 1.0.0 is registered but was never promoted: the session
    # registry's model objects without its promotion (no second validation run for 1.0.0).
    store = tmp_path / "store"
    shutil.copytree(registry.store.root / "models", store / "models", ignore=shutil.ignore_patterns("aliases"))
    env = {"VERDICT_HOME": str(tmp_path / "home"), "VERDICT_STORE": store.as_uri()}
    directory = str(trained_dirs["german-credit"])
    register = ("models", "register", directory, "--promote-if-unset")

    refused = run_verdict(*register, env={**env, "VERDICT_PROMOTION_REQUIRES": "validated"})
    assert refused.returncode == 1 and "already registered (identical) german-credit:1.0.0" in refused.stdout
    assert "error: german-credit:1.0.0 is registered but was not promoted: " in refused.stderr
    assert "requires validation status 'validated'" in refused.stderr

    first = run_verdict(*register, "--by", "kserve/credit", env=env)
    assert first.returncode == 0, first.stderr
    assert "production alias of german-credit -> 1.0.0 (promotion #0 at " in first.stdout
    restart = run_verdict(*register, "--by", "kserve/credit", env=env)
    assert restart.returncode == 0, restart.stderr
    assert "already registered (identical) german-credit:1.0.0" in restart.stdout
    assert "production version of german-credit is 1.0.0 (promotion #0), left as it is" in restart.stdout

    # A new version handed over later is registered, and serves only once a person promotes it.
    newer = tmp_path / "german-credit-1.0.1"
    shutil.copytree(trained_dirs["german-credit"], newer)
    manifest = decode_manifest((newer / MANIFEST_FILE).read_bytes())
    (newer / MANIFEST_FILE).write_bytes(encode_manifest(msgspec.structs.replace(manifest, version="1.0.1")))
    handed = run_verdict("models", "register", str(newer), "--promote-if-unset", env=env)
    assert handed.returncode == 0, handed.stderr
    assert "registered german-credit:1.0.1" in handed.stdout
    assert "production version of german-credit is 1.0.0 (promotion #0), left as it is; " in handed.stdout
    assert "to serve 1.0.1: verdict models promote german-credit:1.0.1" in handed.stdout
    listed = json.loads(run_verdict("models", "list", "--json", env=env).stdout)  # taiwan-default too, if present
    german = {"name": "german-credit", "versions": ["1.0.0", "1.0.1"], "production": "1.0.0", "revoked": []}
    assert [row for row in listed if row["name"] == "german-credit"] == [german]
    promotion = Registry(FilesystemStore(store)).alias("german-credit", "production")
    assert promotion is not None and (promotion.sequence, promotion.promoted_by) == (0, "kserve/credit")


def test_store_override_by_environment(registry, tmp_path):
    """VERDICT_STORE, not $VERDICT_HOME's store, is where a models command writes. Shown with a
    promotion (every models command opens its store the same way, commands.registry_access):
    a registration would validate the model again in the fresh process, seconds for nothing new;
    `register --promote-if-unset` into VERDICT_STORE is proved above."""
    elsewhere = tmp_path / "elsewhere"  # german-credit 1.0.0 registered there, never promoted
    shutil.copytree(registry.store.root / "models", elsewhere / "models", ignore=shutil.ignore_patterns("aliases"))
    env = {"VERDICT_HOME": str(tmp_path / "home"), "VERDICT_STORE": elsewhere.as_uri()}
    result = run_verdict("models", "promote", "german-credit:1.0.0", env=env)
    assert result.returncode == 0, result.stderr
    promotion = Registry(FilesystemStore(elsewhere)).alias("german-credit", "production")
    assert promotion is not None and promotion.version == "1.0.0"
    assert not (tmp_path / "home" / "store").exists()


def test_show_unknown_model_is_a_clean_error(tmp_path):
    result = run_verdict("models", "show", "nope", env={"VERDICT_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.startswith("error: no model named 'nope'") and "Traceback" not in result.stderr


def test_predict_rejects_bad_lines_and_scores_nothing(registry, tmp_path):
    row = load_dataset("german-credit").rows[0]
    bad = dict(row, age_years=7)
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n{not json\n")
    result = run_verdict(
        "models", "predict", "german-credit", "--input", str(path), env={"VERDICT_STORE": registry.store.url}
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "line 2.age_years: must be >= 18 (rule minimum, value 7)" in result.stderr
    assert "line 3: not valid JSON" in result.stderr


def test_predict_reads_stdin_and_forced_bucket(registry):
    row = load_dataset("german-credit").rows[0]
    result = run_verdict(
        "models",
        "predict",
        "german-credit:1.0.0",
        "--input",
        "-",
        "--bucket",
        "8",
        env={"VERDICT_STORE": registry.store.url},
        input=json.dumps(row) + "\n",
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["line"] == 1 and line["bucket"] == 8 and 0.0 < line["score"] < 1.0


def test_demo_bootstraps_on_an_empty_home(tmp_path):
    result = run_verdict("demo", env={"VERDICT_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert "First run: training the german-credit reference model 2.0.0" in result.stdout
    assert "german-credit:2.0.0" in result.stdout
    assert "decline" in result.stdout or "approve" in result.stdout
    second = run_verdict("demo", env={"VERDICT_HOME": str(tmp_path / "home")})
    assert "First run" not in second.stdout
