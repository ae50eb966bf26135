"""The log's side of c2sp.org/tlog-witness: submit a checkpoint, get back a verified cosignature.

Why standard library only: the submitter runs inside the gateway's
checkpoint path and in operators' scripts; ``urllib.request`` is enough for
one POST and adds no dependency. A cosignature is returned only after it
verifies against the witness's configured vkey, so a misbehaving or
impersonated witness cannot slip a bad line into a published checkpoint.

A 409 means the witness has cosigned a different size than the caller
assumed (e.g. after the caller lost its own record of it); the response
carries the witness's size, and ``submit_with_retry`` retries exactly once
with a consistency proof from that size.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from email.message import Message

from verdict.audit.checkpoint import CheckpointError, parse_body
from verdict.audit.cosignature import (
    CosignatureError,
    decode_witness_vkey,
    note_body,
    verify_cosignatures,
    witness_key_hash,
)
from verdict.audit.witness import format_add_checkpoint, origin_hash

__all__ = [
    "WitnessClient",
    "WitnessClientError",
    "WitnessConflict",
    "WitnessRejected",
    "WitnessUnavailable",
]

_SIZE_MEDIA_TYPE = "text/x.tlog.size"
_MAX_RESPONSE_BYTES = 1 << 20


class WitnessClientError(Exception):
    """The witness did not give a verified cosignature."""


class WitnessUnavailable(WitnessClientError):
    """No HTTP answer (connection refused, timeout), or an unexpected server error."""


class WitnessRejected(WitnessClientError):
    """The witness refused the checkpoint (400, 403, 404, 422, ...) or answered something invalid."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"witness answered {status}: {message}")
        self.status = status


class WitnessConflict(WitnessClientError):
    """409: the witness's latest cosigned size is ``current_size``, not the ``old`` that was sent."""

    def __init__(self, current_size: int) -> None:
        super().__init__(f"the witness's latest cosigned size is {current_size}")
        self.current_size = current_size


class WitnessClient:
    """One witness: its URL prefix, its name and cosignature vkey (type 0x04)."""

    def __init__(self, url: str, name: str, vkey: str, timeout: float = 10.0) -> None:
        vkey_name, self.public_key = decode_witness_vkey(vkey)
        if vkey_name != name:
            raise ValueError(f"witness vkey is for {vkey_name!r}, not {name!r}")
        self.url = url.rstrip("/")
        self.name = name
        self.vkey = vkey
        self.timeout = timeout

    def submit(self, old_size: int, proof: Sequence[bytes], note: bytes) -> str:
        """POST add-checkpoint; the witness's cosignature line on ``note`` (ending in a newline), verified.

        Raises WitnessConflict (409, with the witness's size), WitnessRejected
        or WitnessUnavailable.
        """
        checkpoint = note_body(note)  # a ValueError here, before anything is sent
        body = format_add_checkpoint(old_size, list(proof), note)
        status, headers, data = self._request("POST", "/add-checkpoint", body)
        if status == 409:
            raise WitnessConflict(_parse_size(headers.get("Content-Type", ""), data))
        if status != 200:
            raise _refusal(status, data)
        return self._verified_line(checkpoint, data)

    def submit_with_retry(
        self, note: bytes, proof_for: Callable[[int], Sequence[bytes]], last_size_hint: int = 0
    ) -> str:
        """Submit with a proof from ``last_size_hint``; after a 409, once more from the witness's size.

        ``proof_for(old)`` returns the consistency proof from tree size ``old``
        to the note's tree (it is not called for 0 or the note's own size,
        whose proofs are empty).
        """
        size = parse_body(note_body(note)).size
        try:
            return self.submit(last_size_hint, _proof(proof_for, last_size_hint, size), note)
        except WitnessConflict as conflict:
            if conflict.current_size > size:
                raise WitnessRejected(
                    409, f"the witness has already cosigned size {conflict.current_size}, larger than {size}"
                ) from None
            return self.submit(conflict.current_size, _proof(proof_for, conflict.current_size, size), note)

    def fetch_latest(self, origin: str) -> bytes | None:
        """The latest checkpoint the witness cosigned for ``origin`` (None if none), its cosignature verified.

        Uses the spec's monitoring path ``GET <prefix>/<origin hash>/checkpoint``.
        The log's own signatures are for the caller to check (it knows the log keys).
        """
        status, _headers, data = self._request("GET", f"/{origin_hash(origin)}/checkpoint", None)
        if status == 404:
            return None
        if status != 200:
            raise _refusal(status, data)
        try:
            found = parse_body(note_body(data)).origin
            cosigned = verify_cosignatures(data, {self.name: self.public_key})
        except (CheckpointError, CosignatureError) as exc:
            raise WitnessRejected(status, f"invalid checkpoint from the witness: {exc}") from None
        if found != origin:
            raise WitnessRejected(status, f"asked for log {origin!r}, got a checkpoint of {found!r}")
        if self.name not in cosigned:
            raise WitnessRejected(status, "the checkpoint does not carry this witness's cosignature")
        return data

    # --- plumbing ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, Message, bytes]:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "text/plain; charset=utf-8")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read(_MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read(_MAX_RESPONSE_BYTES)
        except (urllib.error.URLError, OSError) as exc:
            raise WitnessUnavailable(f"witness {self.url} unreachable: {exc}") from None

    def _verified_line(self, body: bytes, data: bytes) -> str:
        """The response's line(s) by this witness, checked; lines by other keys are ignored."""
        try:
            cosigned = verify_cosignatures(body + b"\n" + data, {self.name: self.public_key})
        except CosignatureError as exc:
            raise WitnessRejected(200, f"invalid cosignature response: {exc}") from None
        if self.name not in cosigned:
            raise WitnessRejected(200, "the response has no cosignature by this witness's key")
        # verify_cosignatures checked every line claiming this key; return the first one of ours.
        mine = f"\u2014 {self.name} "
        key_id = witness_key_hash(self.name, self.public_key)
        for line in data.decode("utf-8").splitlines(keepends=True):
            if line.startswith(mine) and base64.b64decode(line[len(mine) :])[:4] == key_id:
                return line
        raise WitnessRejected(200, "the response has no cosignature by this witness's key")


def _proof(proof_for: Callable[[int], Sequence[bytes]], old: int, size: int) -> list[bytes]:
    return [] if old in (0, size) else list(proof_for(old))


def _parse_size(content_type: str, data: bytes) -> int:
    text = data.decode("ascii", "replace")
    if content_type.split(";")[0].strip().lower() != _SIZE_MEDIA_TYPE or not text.endswith("\n"):
        raise WitnessRejected(409, f"409 without a {_SIZE_MEDIA_TYPE} body: {text[:80]!r}")
    size = text[:-1]
    if not size.isdigit() or (size != "0" and size.startswith("0")) or not size.isascii():
        raise WitnessRejected(409, f"409 with a malformed size: {text[:80]!r}")
    return int(size)


def _refusal(status: int, data: bytes) -> WitnessClientError:
    message = data.decode("utf-8", "replace").strip()[:500] or "(no reason given)"
    if status >= 500:
        return WitnessUnavailable(f"witness error {status}: {message}")
    return WitnessRejected(status, message)
