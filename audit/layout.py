"""Every store key the audit trail uses, named in one place.

::

    keys/<key-file-id>.json                      public key documents
    chains/<chain_id>/segments/<first_seq:020d>  a batch of signed records
    chains/<chain_id>/checkpoints/<size:020d>    signed checkpoint notes
    chains/<chain_id>/leases/<n:020d>            the chain's writer lease (audit.lease; not evidence)
    index/requests/<sha256(request_id) hex>      request index entries
    evidence/sha256/<hex>                        evidence documents (content-addressed)

Store keys allow only ``[A-Za-z0-9_.-]`` per segment, so a key id
``ed25519:<hex16>`` is written as ``ed25519_<hex16>`` in key names. Numbers
are zero-padded to 20 digits so byte order equals numeric order (2**64 fits).
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "CHAINS_PREFIX",
    "CONTENT_ADDRESSED",
    "EVIDENCE_PREFIX",
    "INDEX_PREFIX",
    "KEYS_PREFIX",
    "LayoutError",
    "certificate_key",
    "certificates_prefix",
    "chain_prefix",
    "check_chain_id",
    "checkpoint_key",
    "checkpoints_prefix",
    "content_address",
    "cosigned_key",
    "cosigned_prefix",
    "evidence_key",
    "index_key",
    "key_id_from_store_key",
    "lease_key",
    "leases_prefix",
    "number_from_key",
    "parse_certificate_key",
    "private_key_filename",
    "public_key_key",
    "segment_key",
    "segments_prefix",
]

KEYS_PREFIX = "keys/"
CHAINS_PREFIX = "chains/"
INDEX_PREFIX = "index/requests/"
EVIDENCE_PREFIX = "evidence/sha256/"
CERTIFICATES_PREFIX = "trust/certificates/"

_CHAIN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY_ID = re.compile(r"ed25519:([0-9a-f]{16})")
_KEY_FILE = re.compile(r"keys/ed25519_([0-9a-f]{16})\.json")
_NUMBER = re.compile(r"[0-9]{20}")
_CERTIFICATE_KEY = re.compile(r"trust/certificates/([A-Za-z0-9_.\-]{1,64})/([0-9]{20})-ed25519_([0-9a-f]{16})\.json")
CONTENT_ADDRESSED = re.compile(r"(?:^|.*/)sha256/([0-9a-f]{64})$")
"""Any key ending in ``sha256/<64 hex>`` names its own SHA-256 (model blobs,
environment manifests, evidence); the verifier re-hashes every one."""


class LayoutError(ValueError):
    """A name that cannot be part of the layout."""


def check_chain_id(chain_id: str) -> str:
    if not isinstance(chain_id, str) or not _CHAIN_ID.fullmatch(chain_id) or chain_id in (".", ".."):
        raise LayoutError(f"chain id {chain_id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return chain_id


def _key_file_id(key_id: str) -> str:
    match = _KEY_ID.fullmatch(key_id)
    if not match:
        raise LayoutError(f"key id {key_id!r} must be 'ed25519:' followed by 16 lower-case hex digits")
    return "ed25519_" + match.group(1)


def public_key_key(key_id: str) -> str:
    return f"{KEYS_PREFIX}{_key_file_id(key_id)}.json"


def key_id_from_store_key(key: str) -> str | None:
    match = _KEY_FILE.fullmatch(key)
    return f"ed25519:{match.group(1)}" if match else None


def private_key_filename(key_id: str) -> str:
    """File name of a private key in ``<data_dir>/keys``."""
    return _key_file_id(key_id) + ".pem"


def chain_prefix(chain_id: str) -> str:
    return f"{CHAINS_PREFIX}{check_chain_id(chain_id)}/"


def segments_prefix(chain_id: str) -> str:
    return chain_prefix(chain_id) + "segments/"


def checkpoints_prefix(chain_id: str) -> str:
    return chain_prefix(chain_id) + "checkpoints/"


def leases_prefix(chain_id: str) -> str:
    return chain_prefix(chain_id) + "leases/"


def lease_key(chain_id: str, n: int) -> str:
    return f"{leases_prefix(chain_id)}{n:020d}"


def cosigned_prefix(chain_id: str) -> str:
    return chain_prefix(chain_id) + "cosigned/"


def cosigned_key(chain_id: str, size: int) -> str:
    """A checkpoint with witness cosignatures appended (§8a)."""
    return f"{cosigned_prefix(chain_id)}{size:020d}"


def certificates_prefix(chain_id: str) -> str:
    return f"{CERTIFICATES_PREFIX}{check_chain_id(chain_id)}/"


def certificate_key(chain_id: str, from_seq: int, key_id: str) -> str:
    """Where the root's certificate of ``key_id`` on ``chain_id`` from ``from_seq`` lives (§5a)."""
    return f"{certificates_prefix(chain_id)}{from_seq:020d}-{_key_file_id(key_id)}.json"


def parse_certificate_key(key: str) -> tuple[str, int, str] | None:
    """(chain_id, from_seq, key_id) named by a certificate key, else None."""
    match = _CERTIFICATE_KEY.fullmatch(key)
    if not match or match.group(1) in (".", ".."):
        return None
    return match.group(1), int(match.group(2)), f"ed25519:{match.group(3)}"


def segment_key(chain_id: str, first_seq: int) -> str:
    return f"{segments_prefix(chain_id)}{first_seq:020d}"


def checkpoint_key(chain_id: str, size: int) -> str:
    return f"{checkpoints_prefix(chain_id)}{size:020d}"


def number_from_key(key: str) -> int | None:
    """The 20-digit number at the end of a segment, checkpoint or lease key, else None."""
    last = key.rsplit("/", 1)[-1]
    return int(last) if _NUMBER.fullmatch(last) else None


def index_key(request_id: str) -> str:
    digest = hashlib.sha256(request_id.encode("utf-8")).hexdigest()
    return f"{INDEX_PREFIX}{digest}"


def evidence_key(sha256_hex: str) -> str:
    return f"{EVIDENCE_PREFIX}{sha256_hex}"


def content_address(key: str) -> str | None:
    """The hex digest a content-addressed key claims, else None."""
    match = CONTENT_ADDRESSED.match(key)
    return match.group(1) if match else None
