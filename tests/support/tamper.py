"""Builders for the tamper suite (issue 15 item 9): a trail made by a real
gateway, copies of it on the filesystem store and on S3 Object Lock (moto),
and the writes an attacker with write permission on the store can make.

Nothing of ours is patched: the trail comes from ``verdict serve`` and
``verdict keys rotate`` processes; the tampering goes around our code, the
way an intruder would (files on disk, raw S3 calls with boto3).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.gateway_server import PROJECT, GatewayServer, prepare_home
from verdict.audit import layout
from verdict.audit.completeness import HeldReceipt
from verdict.audit.index import IndexEntry, decode_stored_entry, encode_entry
from verdict.audit.records import decode_record, iter_lines, split_line
from verdict.audit.stores import FilesystemStore
from verdict.audit.trust import RootKey, TrustPolicy
from verdict.gateway.datasets import load_dataset

__all__ = [
    "CHAIN",
    "Attacker",
    "GatewayTrail",
    "build_gateway_trail",
    "chain_kinds",
    "copy_to_filesystem",
    "copy_to_s3",
]

CHAIN = "gateway-0"


@dataclass
class GatewayTrail:
    """What one real gateway left: its store, the policy and what lives outside the store."""

    home: Path
    store_dir: Path
    policy: TrustPolicy
    held_note: bytes  # home/trust/held/gateway-0.checkpoint: the gateway's own latest checkpoint
    receipts: dict[str, HeldReceipt]  # request id -> the receipt the HTTP API returned
    rotation_seq: int  # seq of the key_rotation record

    def held(self) -> list[tuple[str, bytes]]:
        return [("held", self.held_note)]

    def held_receipts(self) -> list[tuple[str, HeldReceipt]]:
        return [(request_id, receipt) for request_id, receipt in self.receipts.items()]


def _decide(client: httpx.Client, request_ids: list[str], offset: int) -> dict[str, dict]:
    rows = load_dataset("german-credit").rows
    out = {}
    for n, request_id in enumerate(request_ids):
        made = client.post(
            "/v1/decisions",
            json={"model": "german-credit", "request_id": request_id, "attributes": rows[(offset + n) % len(rows)]},
        )
        assert made.status_code == 200, made.text
        out[request_id] = made.json()
    return out


def build_gateway_trail(home: Path, model_dir: Path) -> GatewayTrail:
    """Two gateway sessions around a key rotation: 12 decisions and 2 lookups, rotate, 3 decisions."""
    tokens = prepare_home(home, model_dir)
    env = {"VERDICT_CHECKPOINT_EVERY": "4"}  # several checkpoints, so a truncation must remove some
    decisions: dict[str, dict] = {}
    server = GatewayServer(home, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.headers.update({"Authorization": f"Bearer {tokens['client']}"})
            decisions |= _decide(client, [f"t-{i}" for i in range(6)], 0)
            for request_id in ("t-1", "t-5"):  # two lookups: access records 7 and 8
                got = client.get(f"/v1/decisions/{request_id}", headers={"Authorization": f"Bearer {tokens['staff']}"})
                assert got.status_code == 200, got.text
            decisions |= _decide(client, [f"t-{i}" for i in range(6, 12)], 6)
    finally:
        server.stop()
    rotated = subprocess.run(
        [sys.executable, "-m", "verdict", "keys", "rotate", "--chain", CHAIN],
        cwd=PROJECT,
        env={**os.environ, "VERDICT_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    server = GatewayServer(home, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.headers.update({"Authorization": f"Bearer {tokens['client']}"})
            decisions |= _decide(client, [f"t-{i}" for i in range(12, 15)], 12)
    finally:
        server.stop()
    store = FilesystemStore(home / "store")
    rotation_seq = next(seq for seq, kind in chain_kinds(store) if kind == "key_rotation")
    return GatewayTrail(
        home=home,
        store_dir=home / "store",
        policy=RootKey.load(home / "trust" / "root.pem").policy(),
        held_note=(home / "trust" / "held" / f"{CHAIN}.checkpoint").read_bytes(),
        receipts={request_id: HeldReceipt(**d["receipt"]) for request_id, d in decisions.items()},
        rotation_seq=rotation_seq,
    )


def chain_kinds(store, chain_id: str = CHAIN) -> Iterator[tuple[int, str]]:
    for key in sorted(store.list_keys(layout.segments_prefix(chain_id))):
        for line in iter_lines(store.get(key)):
            record = decode_record(split_line(line)[0])
            yield record.seq, record.body.__struct_config__.tag


# --- copies ------------------------------------------------------------------------------------


def copy_to_filesystem(trail: GatewayTrail, dest: Path) -> FilesystemStore:
    """An independent copy of the pristine store (modes kept: objects stay read-only)."""
    shutil.copytree(trail.store_dir, dest, symlinks=True)
    return FilesystemStore(dest)


def copy_to_s3(trail: GatewayTrail, s3_store) -> None:
    """Every object of the pristine store, written by the S3 store's own conditional puts
    (``put_many_once``: If-None-Match, COMPLIANCE retention) as a gateway on S3 would
    have: its index entries pin the segment's S3 VersionId instead of null."""
    source = FilesystemStore(trail.store_dir)
    keys = sorted(source.list_keys(""))
    first = [(key, source.get(key)) for key in keys if not key.startswith("index/")]
    versions = {ref.key: ref.version for ref in s3_store.put_many_once(first)}
    index = [(key, _repin(source.get(key), versions)) for key in keys if key.startswith("index/")]
    s3_store.put_many_once(index)


def _repin(data: bytes, versions: dict[str, str | None]) -> bytes:
    entry = decode_stored_entry(data)
    return encode_entry(IndexEntry(**{**_fields(entry), "segment_version": versions[entry.segment_key]}))


def _fields(entry: IndexEntry) -> dict:
    return {name: getattr(entry, name) for name in entry.__struct_fields__}


# --- the attacker --------------------------------------------------------------------------------


class Attacker:
    """Writes around our code: raw files on the filesystem store, raw boto3 calls on S3."""

    def __init__(self, store, s3_client=None, bucket: str | None = None, prefix: str = "") -> None:
        self.store = store
        self.s3, self.bucket, self.prefix = s3_client, bucket, prefix

    @property
    def on_s3(self) -> bool:
        return self.s3 is not None

    def _path(self, key: str) -> Path:
        return Path(self.store.root) / key

    def overwrite(self, key: str, data: bytes) -> None:
        """fs: rewrite the file in place; S3: a plain PutObject (no If-None-Match): a second version."""
        if self.on_s3:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
            return
        path = self._path(key)
        path.parent.chmod(0o755)
        path.chmod(0o644)
        path.write_bytes(data)
        path.chmod(0o444)

    def delete(self, key: str) -> None:
        """fs: unlink the file; S3: a plain DeleteObject (a delete marker)."""
        if self.on_s3:
            marker = self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            assert marker.get("DeleteMarker") is True, marker
            return
        path = self._path(key)
        path.parent.chmod(0o755)
        path.unlink()

    def writable(self) -> None:
        """Let our own code (a forger running ChainWriter) write into the store's directories."""
        if self.on_s3:
            return
        for directory, _dirs, _files in os.walk(self.store.root):
            Path(directory).chmod(0o755)
