"""The tlog witness: cosignature format (known answers), the witness's rules, and its HTTP server
run as a real process (real keys, real Merkle trees, real checkpoints, no mocks)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from verdict.audit.checkpoint import Checkpoint, encode_vkey, key_hash, sign_checkpoint
from verdict.audit.cosignature import (
    CosignatureError,
    cosign,
    cosignature_message,
    decode_witness_vkey,
    encode_witness_vkey,
    verify_cosignatures,
    witness_key_hash,
)
from verdict.audit.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_from_leaf_hashes
from verdict.audit.witness import (
    BadRequest,
    Conflict,
    InconsistentCheckpoint,
    UnknownLog,
    UnverifiedCheckpoint,
    Witness,
    WitnessStateError,
    format_add_checkpoint,
    load_key,
    load_or_create_key,
    origin_hash,
    parse_add_checkpoint,
)
from verdict.audit.witness_cli import witness_app
from verdict.audit.witness_client import WitnessClient, WitnessConflict, WitnessRejected

PROJECT = Path(__file__).resolve().parents[2]
LOG_NAME = "verdict-log"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
LOG_VKEY = encode_vkey(LOG_NAME, LOG_KEY.public_key())
STRANGER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
WITNESS_NAME = "witness.test/w1"
LEAVES = [leaf_hash(f"record {i}".encode()) for i in range(40)]
FORK = [*LEAVES[:3], leaf_hash(b"rewritten record 3"), *LEAVES[4:]]  # the same log, record 3 rewritten


def note(origin: str, size: int, leaves: list[bytes] = LEAVES, key: Ed25519PrivateKey = LOG_KEY) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, root_from_leaf_hashes(leaves[:size])), [(LOG_NAME, key)])


def proof(old: int, new: int, leaves: list[bytes] = LEAVES) -> list[bytes]:
    return consistency_proof(leaves[:new], old) if old else []


def flip_signature(signed: bytes, name: str) -> bytes:
    """The note with the last signature byte of ``name``'s line(s) flipped (still well-formed)."""
    prefix = f"\u2014 {name} ".encode()
    lines = signed.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            payload = bytearray(base64.b64decode(line[len(prefix) :]))
            payload[-1] ^= 1
            lines[i] = prefix + base64.b64encode(bytes(payload))
    return b"\n".join(lines)


# --- cosignature format: known answers ----------------------------------------------------------

# A real checkpoint of the CT log arche2025h1.staging.ct.transparency.dev as cosigned by the
# public witness remora.n621.de (vkey below, type 0x04); pinned in florolf/tlog-scales's tests.
REAL_NOTE = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n"
    "\u2014 arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbl"
    "lzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    "\u2014 arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1b"
    "fTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "\u2014 transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr"
    "4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    "\u2014 witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQ"
    "tmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    "\u2014 remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0W"
    "BxtqB0DrAWfBw==\n"
    "\u2014 witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI"
    "7cUiOvKFYe/TmN9DAg==\n"
).encode()
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"

# Our own vector: the spec's example checkpoint and timestamp, a fixed key. Ed25519 is
# deterministic, so these bytes must never change.
SPEC_BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_TIME = 1679315147
PINNED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
PINNED_VKEY = "witness.example.com/w1+969980cf+BCmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"
PINNED_LINE = (
    "\u2014 witness.example.com/w1 lpmAzwAAAABkGFDL6ade/xdmW0GepsICyPher/bBsso0aCocxkD4MgnQ2J3N/61CxrucC0uO4wzUWe3K7"
    "XvjkEYtewKXIfP/U7l4Cw==\n"
)


def test_real_witness_cosignature_verifies():
    assert verify_cosignatures(REAL_NOTE, [REMORA_VKEY]) == {"remora.n621.de": 1779573024}
    altered = REAL_NOTE.replace(b"1432088532", b"1432088533")
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignatures(altered, [REMORA_VKEY])


def test_pinned_cosignature_vector_matches_the_spec_layout():
    assert cosign(SPEC_BODY, "witness.example.com/w1", PINNED_KEY, SPEC_TIME) == PINNED_LINE
    assert encode_witness_vkey("witness.example.com/w1", PINNED_KEY.public_key()) == PINNED_VKEY
    # Rebuilt by hand from tlog-cosignature, without the module's helpers:
    raw_key = PINNED_KEY.public_key().public_bytes_raw()
    key_id = hashlib.sha256(b"witness.example.com/w1\n\x04" + raw_key).digest()[:4]
    payload = base64.b64decode(PINNED_LINE.removeprefix("\u2014 witness.example.com/w1 "))
    assert payload[:4] == key_id == witness_key_hash("witness.example.com/w1", PINNED_KEY.public_key())
    assert payload[4:12] == SPEC_TIME.to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY
    assert cosignature_message(SPEC_BODY, SPEC_TIME) == message
    PINNED_KEY.public_key().verify(payload[12:], message)
    # The spec's own example cosignature line carries the same timestamp in the same place.
    example = base64.b64decode(
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    assert len(example) == 4 + 8 + 64 and int.from_bytes(example[4:12], "big") == SPEC_TIME


def test_witness_vkey_is_type_4_and_never_a_log_key():
    name, public_key = decode_witness_vkey(PINNED_VKEY)
    assert name == "witness.example.com/w1"
    assert witness_key_hash(name, public_key) != key_hash(name, public_key)  # 0x04 vs 0x01
    with pytest.raises(CosignatureError, match="type 01"):
        decode_witness_vkey(encode_vkey(name, public_key))
    with pytest.raises(CosignatureError, match="does not match"):
        decode_witness_vkey(PINNED_VKEY.replace("+969980cf+", "+00000000+"))


def test_verify_cosignatures_ignores_strangers_and_refuses_forgeries():
    signed = note("verdict/format", 3)
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    cosigned = signed + cosign(signed, "a", a, 100).encode() + cosign(signed, "b", b, 200).encode()
    assert verify_cosignatures(cosigned, {"a": a.public_key()}) == {"a": 100}
    assert verify_cosignatures(cosigned, [encode_witness_vkey("b", b.public_key())]) == {"b": 200}
    assert verify_cosignatures(signed, {"a": a.public_key()}) == {}  # only the log's line: no witness
    with pytest.raises(CosignatureError, match="in the future"):
        verify_cosignatures(cosigned, {"b": b.public_key()}, not_after=199)
    forged = flip_signature(signed + cosign(signed, "a", a, 100).encode(), "a")
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignatures(forged, {"a": a.public_key()})
    other_tree = note("verdict/format", 4)
    moved = other_tree + cosign(signed, "a", a, 100).encode()  # a cosignature moved to another checkpoint
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignatures(moved, {"a": a.public_key()})
    with pytest.raises(CosignatureError, match="timestamp 0"):
        cosign(signed, "a", a, 0)
    with pytest.raises(CosignatureError, match="not a checkpoint"):
        cosign(b"hello\n", "a", a, 1)


# --- the add-checkpoint body --------------------------------------------------------------------


def test_request_body_roundtrip():
    signed = note("verdict/x", 9)
    body = format_add_checkpoint(5, proof(5, 9), signed)
    assert body.startswith(b"old 5\n") and body.endswith(b"\n\n" + signed)
    parsed = parse_add_checkpoint(body)
    assert (parsed.old_size, list(parsed.proof), parsed.note) == (5, proof(5, 9), signed)


@pytest.mark.parametrize(
    "body",
    [
        b"old 01\n\nX",  # leading zero
        b"old -1\n\nX",
        b"old 5 \n\nX",
        b"new 5\n\nX",
        b"old 5\nnot base64!\n\nX",
        b"old 5\n" + base64.b64encode(b"short") + b"\n\nX",  # not a 32-byte hash
        b"old 5\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\nX",  # > 63 lines
        b"old 5\n",  # no blank line
        b"old 5\n\n",  # no checkpoint
    ],
)
def test_malformed_request_is_400(body):
    with pytest.raises(BadRequest):
        parse_add_checkpoint(body)


# --- the witness's rules, in process ------------------------------------------------------------


@pytest.fixture
def witness(tmp_path):
    key, created = load_or_create_key(tmp_path / "state" / "witness.pem")
    assert created and (tmp_path / "state" / "witness.pem").stat().st_mode & 0o777 == 0o600
    with Witness(WITNESS_NAME, key, tmp_path / "state", {"verdict/a": [LOG_VKEY]}) as w:
        yield w


def test_witness_rules_in_process(witness, tmp_path):
    empty = sign_checkpoint(Checkpoint("verdict/a", 0, hashlib.sha256(b"not empty").digest()), [(LOG_NAME, LOG_KEY)])
    with pytest.raises(InconsistentCheckpoint, match="empty-tree root"):
        witness.add_checkpoint(format_add_checkpoint(0, [], empty))
    with pytest.raises(InconsistentCheckpoint, match="proof must be empty"):
        witness.add_checkpoint(format_add_checkpoint(0, [bytes(32)], note("verdict/a", 4)))
    with pytest.raises(BadRequest, match="larger than the checkpoint size"):
        witness.add_checkpoint(format_add_checkpoint(5, [], note("verdict/a", 4)))
    with pytest.raises(UnknownLog):
        witness.add_checkpoint(format_add_checkpoint(0, [], note("verdict/b", 4)))
    with pytest.raises(UnverifiedCheckpoint):
        witness.add_checkpoint(format_add_checkpoint(0, [], note("verdict/a", 4, key=STRANGER_KEY)))
    assert witness.latest("verdict/a") is None
    zero = sign_checkpoint(Checkpoint("verdict/a", 0, EMPTY_ROOT), [(LOG_NAME, LOG_KEY)])
    assert verify_cosignatures(
        zero + witness.add_checkpoint(format_add_checkpoint(0, [], zero)), [witness.vkey]
    ).keys() == {WITNESS_NAME}
    with pytest.raises(WitnessStateError, match="another witness process"):
        Witness(WITNESS_NAME, Ed25519PrivateKey.generate(), tmp_path / "state", {"verdict/a": [LOG_VKEY]})


def test_concurrent_requests_from_one_size_cosign_exactly_one(witness):
    witness.add_checkpoint(format_add_checkpoint(0, [], note("verdict/a", 5)))
    barrier, outcomes = threading.Barrier(8), []

    def submit(size: int) -> None:
        body = format_add_checkpoint(5, proof(5, size), note("verdict/a", size))
        barrier.wait()
        try:
            witness.add_checkpoint(body)
            outcomes.append(("ok", size))
        except Conflict as exc:
            outcomes.append(("conflict", exc.current_size))

    threads = [threading.Thread(target=submit, args=(size,)) for size in range(6, 14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [size for kind, size in outcomes if kind == "ok"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert {size for kind, size in outcomes if kind == "conflict"} == {winners[0]}
    assert witness.state("verdict/a").size == winners[0]


def test_timestamps_never_go_back_with_the_clock(tmp_path):
    clock = iter([2_000_000_000, 1_000_000_000])
    with Witness(
        WITNESS_NAME, Ed25519PrivateKey.generate(), tmp_path, {"verdict/a": [LOG_VKEY]}, clock=lambda: next(clock)
    ) as w:
        w.add_checkpoint(format_add_checkpoint(0, [], note("verdict/a", 2)))
        line = w.add_checkpoint(format_add_checkpoint(2, proof(2, 3), note("verdict/a", 3)))
        assert verify_cosignatures(note("verdict/a", 3) + line, [w.vkey]) == {WITNESS_NAME: 2_000_000_000}


# --- the HTTP server as a real process ----------------------------------------------------------

HTTP_ORIGINS = [
    "verdict/first",
    "verdict/extend",
    "verdict/same-size",
    "verdict/fork",
    "verdict/stale",
    "verdict/refusals",
    "verdict/reads",
]


class WitnessProcess:
    """``python -m audit.witness_cli serve`` on a free loopback port."""

    def __init__(self, state: Path, logs: Path) -> None:
        self.state, self.logs = state, logs
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> WitnessProcess:
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.stdout = self.state.parent / f"witness-{port}.out"
            with open(self.stdout, "wb") as out:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-u",
                        "-m",
                        "verdict.audit.witness_cli",
                        "serve",
                        "--state",
                        str(self.state),
                        "--name",
                        WITNESS_NAME,
                        "--logs",
                        str(self.logs),
                        "--port",
                        str(port),
                    ],
                    cwd=PROJECT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "COLUMNS": "500"},
                )
            if self._wait_healthy():
                return self
        raise AssertionError(f"witness did not start:\n{self.stdout.read_text()}")

    def _wait_healthy(self) -> bool:
        for _poll in range(400):  # bounded: a failure to start ends the test, never hangs it
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        return False

    @property
    def printed_vkey(self) -> str:
        lines = [line for line in self.stdout.read_text().splitlines() if line.startswith("witness vkey: ")]
        return lines[0].removeprefix("witness vkey: ")

    def client(self) -> WitnessClient:
        return WitnessClient(self.url, WITNESS_NAME, self.printed_vkey, timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs_file(path: Path, origins: list[str]) -> Path:
    path.write_text(json.dumps({"logs": [{"origin": o, "vkeys": [LOG_VKEY]} for o in origins]}))
    return path


def post(url: str, body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("witness-http")
    process = WitnessProcess(root / "state", _logs_file(root / "logs.json", HTTP_ORIGINS)).start()
    yield process
    process.stop()


def test_key_created_0600_and_vkey_command_matches(server):
    key_file = server.state / "witness.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert server.printed_vkey == encode_witness_vkey(WITNESS_NAME, load_key(key_file).public_key())
    result = CliRunner().invoke(witness_app, ["vkey", "--state", str(server.state), "--name", WITNESS_NAME])
    assert result.exit_code == 0 and result.output.strip() == server.printed_vkey
    missing = CliRunner().invoke(witness_app, ["vkey", "--key", str(server.state / "absent.pem")])
    assert missing.exit_code == 2 and not (server.state / "absent.pem").exists()


def test_first_checkpoint_is_cosigned_and_verifies(server):
    signed = note("verdict/first", 5)
    status, _type, body = post(server.url, format_add_checkpoint(0, [], signed))
    assert status == 200 and body.startswith("\u2014 witness.test/w1 ".encode()) and body.endswith(b"\n")
    cosigned = verify_cosignatures(signed + body, [server.printed_vkey])
    assert set(cosigned) == {WITNESS_NAME} and cosigned[WITNESS_NAME] > 0
    _, public_key = decode_witness_vkey(server.printed_vkey)
    assert isinstance(public_key, Ed25519PublicKey)


def test_consistent_extension_is_cosigned(server):
    client = server.client()
    client.submit(0, [], note("verdict/extend", 3))
    for old, new in [(3, 8), (8, 8), (8, 21)]:  # equal size with the same root is fine too
        line = client.submit(old, proof(old, new), note("verdict/extend", new))
        assert verify_cosignatures(note("verdict/extend", new) + line.encode(), [client.vkey]).keys() == {WITNESS_NAME}
    assert client.fetch_latest("verdict/extend").startswith(note("verdict/extend", 21))


def test_same_size_different_root_is_422_and_state_unchanged(server):
    client = server.client()
    client.submit(0, [], note("verdict/same-size", 6))
    before = client.fetch_latest("verdict/same-size")
    status, _type, reason = post(server.url, format_add_checkpoint(6, [], note("verdict/same-size", 6, FORK)))
    assert status == 422, reason
    assert client.fetch_latest("verdict/same-size") == before
    client.submit(6, proof(6, 7), note("verdict/same-size", 7))  # the honest log goes on


def test_fork_with_bad_proof_is_422_state_unchanged_and_evidence_kept(server):
    client = server.client()
    client.submit(0, [], note("verdict/fork", 8))
    before = client.fetch_latest("verdict/fork")
    forked = format_add_checkpoint(8, proof(8, 12, FORK), note("verdict/fork", 12, FORK))
    status, _type, reason = post(server.url, forked)
    assert status == 422 and b"not consistent" in reason
    with pytest.raises(WitnessRejected) as garbage:
        client.submit(8, [bytes(32)] * len(proof(8, 12)), note("verdict/fork", 12))
    assert garbage.value.status == 422
    assert client.fetch_latest("verdict/fork") == before
    evidence = server.state / "evidence" / origin_hash("verdict/fork")
    assert forked in [p.read_bytes() for p in evidence.iterdir()]
    client.submit(8, proof(8, 12), note("verdict/fork", 12))


def test_stale_old_size_is_409_with_the_size_then_one_retry_succeeds(server):
    client = server.client()
    client.submit(0, [], note("verdict/stale", 10))
    status, content_type, body = post(server.url, format_add_checkpoint(4, proof(4, 15), note("verdict/stale", 15)))
    assert (status, content_type, body) == (409, "text/x.tlog.size", b"10\n")
    with pytest.raises(WitnessConflict) as conflict:
        client.submit(0, [], note("verdict/stale", 15))
    assert conflict.value.current_size == 10
    asked = []

    def proof_for(size: int) -> list[bytes]:
        asked.append(size)
        return proof(size, 15)

    line = client.submit_with_retry(note("verdict/stale", 15), proof_for, last_size_hint=4)
    assert asked == [4, 10]
    assert verify_cosignatures(note("verdict/stale", 15) + line.encode(), [client.vkey]).keys() == {WITNESS_NAME}
    asked.clear()
    again = client.submit_with_retry(note("verdict/stale", 15), proof_for, last_size_hint=0)  # 409 "15": same tree
    assert asked == [] and verify_cosignatures(note("verdict/stale", 15) + again.encode(), [client.vkey])
    with pytest.raises(WitnessRejected, match="larger than 12"):  # the witness is ahead: nothing to retry
        client.submit_with_retry(note("verdict/stale", 12), proof_for, last_size_hint=0)


def test_unknown_log_or_key_and_malformed_requests_are_refused(server):
    status, _type, _body = post(server.url, format_add_checkpoint(0, [], note("verdict/unknown", 3)))
    assert status == 404
    status, _type, _body = post(server.url, format_add_checkpoint(0, [], note("verdict/refusals", 3, key=STRANGER_KEY)))
    assert status == 403
    tampered = flip_signature(note("verdict/refusals", 3), LOG_NAME)
    status, _type, _body = post(server.url, format_add_checkpoint(0, [], tampered))
    assert status == 403  # a line by the trusted key that does not verify
    status, _type, _body = post(server.url, b"old 01\n\n" + note("verdict/refusals", 3))
    assert status == 400
    assert server.client().fetch_latest("verdict/refusals") is None


def test_read_endpoints(server):
    client = server.client()
    client.submit(0, [], note("verdict/reads", 2))
    latest = client.fetch_latest("verdict/reads")
    quoted = urllib.parse.quote("verdict/reads", safe="")
    with urllib.request.urlopen(f"{server.url}/checkpoint/{quoted}", timeout=10) as response:
        assert response.read() == latest
    with urllib.request.urlopen(f"{server.url}/{origin_hash('verdict/reads')}/checkpoint", timeout=10) as response:
        assert response.read() == latest
    for path in [f"/{origin_hash('verdict/nothing')}/checkpoint", "/checkpoint/verdict%2Fnothing"]:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert missing.value.code == 404
        missing.value.close()


def test_restart_keeps_state_and_key(tmp_path):
    logs = _logs_file(tmp_path / "logs.json", ["verdict/gateway-0"])
    first = WitnessProcess(tmp_path / "state", logs).start()
    try:
        client = first.client()
        client.submit(0, [], note("verdict/gateway-0", 5))
        client.submit(5, proof(5, 9), note("verdict/gateway-0", 9))
        vkey = first.printed_vkey
    finally:
        first.stop()
    second = WitnessProcess(tmp_path / "state", logs).start()
    try:
        client = second.client()
        assert second.printed_vkey == vkey
        status, _type, _body = post(second.url, format_add_checkpoint(9, [], note("verdict/gateway-0", 9, FORK)))
        assert status == 422
        with pytest.raises(WitnessConflict) as conflict:
            client.submit(0, [], note("verdict/gateway-0", 12, FORK))
        assert conflict.value.current_size == 9
        assert client.fetch_latest("verdict/gateway-0").startswith(note("verdict/gateway-0", 9))
        client.submit(9, proof(9, 12), note("verdict/gateway-0", 12))
    finally:
        second.stop()
