"""Registry: content addressing, immutability, tamper refusal, aliases."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from audit.stores import FilesystemStore
from gateway.registry import Registry, RegistryError, TamperedBlob, UnknownModel, blob_key, parse_ref


@pytest.fixture
def fresh(tmp_path, trained_dirs):
    store = FilesystemStore(tmp_path / "store")
    return Registry(store), trained_dirs["german-credit"]


def test_register_is_idempotent_for_identical_bytes(fresh):
    registry, directory = fresh
    manifest, new = registry.register(directory)
    assert new
    again, new_again = registry.register(directory)
    assert not new_again and again == manifest
    assert registry.versions("german-credit") == ["1.0.0"]


def test_same_version_with_different_bytes_is_refused(fresh, tmp_path):
    registry, directory = fresh
    registry.register(directory)
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["description"] = "a different model under the same version"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="already registered with different content"):
        registry.register(other)


def test_artifact_not_matching_manifest_is_refused(fresh, tmp_path):
    registry, directory = fresh
    other = tmp_path / "other"
    shutil.copytree(directory, other)
    data = bytearray((other / "model.pt2").read_bytes())
    data[-100] ^= 0x01
    (other / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="hashes to"):
        registry.register(other)


def test_tampered_blob_in_store_is_refused_on_load(fresh):
    from gateway.runtime import load_model

    registry, directory = fresh
    manifest, _ = registry.register(directory)
    path = registry.store.root / blob_key(manifest.artifact_sha256)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedBlob, match="altered or corrupted"):
        load_model(registry, "german-credit", "1.0.0")


def test_missing_blob_is_reported(fresh):
    registry, directory = fresh
    manifest, _ = registry.register(directory)
    os.unlink(registry.store.root / blob_key(manifest.artifact_sha256))
    with pytest.raises(RegistryError, match="missing from the store"):
        registry.artifact(manifest)


def test_unknown_model_and_version(fresh):
    registry, directory = fresh
    with pytest.raises(UnknownModel, match="no model named 'nope'"):
        registry.manifest("nope")
    registry.register(directory)
    with pytest.raises(UnknownModel, match=r"no version '9.9' \(known: 1.0.0\)"):
        registry.manifest("german-credit", "9.9")


def test_promotion_history_is_append_only(fresh, tmp_path):
    registry, directory = fresh
    registry.register(directory)
    assert registry.alias("german-credit", "production") is None
    first = registry.promote("german-credit", "1.0.0")
    second = registry.promote("german-credit", "1.0.0", by="ops")
    assert (first.sequence, second.sequence) == (0, 1)
    assert registry.alias("german-credit", "production").promoted_by == "ops"
    with pytest.raises(UnknownModel):
        registry.promote("german-credit", "2.0.0")


def test_parse_ref():
    assert parse_ref("german-credit") == ("german-credit", None)
    assert parse_ref("german-credit:1.0.0") == ("german-credit", "1.0.0")
    with pytest.raises(RegistryError):
        parse_ref("a:b:c")
