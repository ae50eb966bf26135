"""The trust root: who may sign on which chain, decided outside the store.

Why: a key found in the store proves nothing, since anyone who can write to
the store can publish a key and start a chain with it. A root key kept
outside the store certifies, per chain, each signing key and the record from
which it signs (spec §5a); a verifier holds a *trust policy* (the root public
keys, §5b) and accepts a chain only if its whole key timeline is certified.

Small public API over the dangerous part: :class:`RootKey` holds the root's
signer (a file outside the store, or KMS) and only ever signs certificates;
everything else here is verification, and every failure is a
:class:`TrustError` with a stable reason code from spec §10.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

from verdict.audit import layout
from verdict.audit.canonical import canonical_bytes
from verdict.audit.config import data_dir
from verdict.audit.kms import KmsEd25519Signer
from verdict.audit.records import KeyDocument, KeyId, Timestamp, utc_now
from verdict.audit.signing import (
    Ed25519Signer,
    KeyDocumentError,
    Signer,
    check_key_document,
    make_key_document,
)
from verdict.audit.stores.base import ObjectExists, WormStore

__all__ = [
    "CERTIFICATE_DOMAIN",
    "POLICY_FORMAT",
    "Certificate",
    "ChainAnchors",
    "RootKey",
    "SignedCertificate",
    "TrustError",
    "TrustPolicy",
    "TrustedRoot",
    "WitnessEntry",
    "certificate_hash",
    "configured_root",
    "decode_certificate",
    "issue_certificate",
    "key_valid_at",
    "load_anchors",
    "load_policy",
    "local_root",
    "local_root_path",
]

CERTIFICATE_FORMAT = "verdict.trust/v1"
POLICY_FORMAT = "verdict.trust-policy/v1"
CERTIFICATE_DOMAIN = b"verdict.trust.certificate.v1\x00"


class TrustError(Exception):
    """A certificate, policy or anchoring check failed; ``reason`` is the spec's code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Subclasses restate frozen=True: msgspec inherits it, but a type checker reads it per class.
class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Certificate(_Strict, frozen=True):
    """The root's statement: on ``chain_id``, ``key`` signs from record ``from_seq`` on (§5a)."""

    chain_id: str
    format: str
    from_seq: int
    issued_at: Timestamp
    key: KeyDocument
    origin: str
    root_key_id: KeyId


class SignedCertificate(_Strict, frozen=True):
    certificate: Certificate
    signature: str


class TrustedRoot(_Strict, frozen=True):
    key_id: KeyId
    public_key: str


class WitnessEntry(_Strict, omit_defaults=True, frozen=True):
    name: str
    vkey: str
    url: str | None = None


class TrustPolicy(_Strict, omit_defaults=True, frozen=True):
    """What a verifier trusts (§5b): root public keys, witnesses and the quorum."""

    format: str
    roots: tuple[TrustedRoot, ...]
    witnesses: tuple[WitnessEntry, ...] = ()
    witness_quorum: int = 0

    def root_keys(self) -> dict[str, bytes]:
        return {root.key_id: base64.b64decode(root.public_key) for root in self.roots}

    def encode(self) -> bytes:
        return canonical_bytes(self) + b"\n"

    def with_witnesses(self, witnesses: Sequence[WitnessEntry], quorum: int) -> TrustPolicy:
        return _checked_policy(msgspec.structs.replace(self, witnesses=tuple(witnesses), witness_quorum=quorum))


_policy_decoder = msgspec.json.Decoder(TrustPolicy)
_certificate_decoder = msgspec.json.Decoder(SignedCertificate)


# --- policy --------------------------------------------------------------------------------


def load_policy(path: str | os.PathLike[str]) -> TrustPolicy:
    """Read and check a trust policy file; :class:`TrustError` ``bad_trust_policy`` if unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustError("bad_trust_policy", f"cannot read trust policy {path}: {exc.strerror}") from None
    return decode_policy(data, str(path))


def decode_policy(data: bytes, where: str = "trust policy") -> TrustPolicy:
    try:
        policy = _policy_decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise TrustError("bad_trust_policy", f"{where}: {exc}") from None
    return _checked_policy(policy, where)


def _checked_policy(policy: TrustPolicy, where: str = "trust policy") -> TrustPolicy:
    if policy.format != POLICY_FORMAT:
        raise TrustError("bad_trust_policy", f"{where}: format must be {POLICY_FORMAT!r}, got {policy.format!r}")
    if not policy.roots:
        raise TrustError("bad_trust_policy", f"{where}: at least one root is required")
    for root in policy.roots:
        raw = _decode_key(root.public_key)
        if raw is None or "ed25519:" + hashlib.sha256(raw).hexdigest()[:16] != root.key_id:
            raise TrustError("bad_trust_policy", f"{where}: root {root.key_id} does not match its public_key")
    names = [w.name for w in policy.witnesses]
    if len(set(names)) != len(names):
        raise TrustError("bad_trust_policy", f"{where}: a witness is listed twice")
    if not 0 <= policy.witness_quorum <= len(policy.witnesses):
        raise TrustError(
            "bad_trust_policy",
            f"{where}: witness_quorum must be between 0 and the number of witnesses ({len(policy.witnesses)})",
        )
    return policy


def _canonical_b64(text: str, size: int) -> bytes | None:
    """``size`` bytes in standard, padded, canonical base64 (one spelling per value), else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size and base64.b64encode(raw).decode("ascii") == text else None


def _decode_key(text: str) -> bytes | None:
    return _canonical_b64(text, 32)


def local_root_path(data_dir: Path) -> Path:
    """The embedded default's root key: in the data directory, outside the store."""
    return data_dir / "trust" / "root.pem"


def configured_root(spec: str | None = None, *, create: bool = False) -> RootKey | None:
    """The root this process certifies with, from ``spec`` or ``$VERDICT_TRUST_ROOT``.

    ``""``/unset: the embedded default, a key file in the data directory
    (created when ``create``, as the gateway does on first start; else used
    only if it exists); a path: that PEM file; ``kms:<key id>``: an AWS KMS
    Ed25519 key; ``none``: no root here (certificates are issued beforehand).
    One rule for the gateway and for the tools that start chains of their own
    (replay, key rotation, the immutability test), so they certify alike.
    """
    spec = os.environ.get("VERDICT_TRUST_ROOT", "") if spec is None else spec
    if spec == "none":
        return None
    if spec.startswith("kms:"):
        return RootKey(KmsEd25519Signer(spec.removeprefix("kms:")))
    if spec:
        return RootKey.load(Path(spec))
    path = local_root_path(data_dir())
    if create:
        return RootKey.load_or_create(path)[0]
    return RootKey.load(path) if path.exists() else None


def local_root() -> RootKey | None:
    """This machine's configured root, if any (never creates one)."""
    return configured_root()


# --- the root key ----------------------------------------------------------------------------


class RootKey:
    """The trust root's signer. It signs certificates and nothing else."""

    def __init__(self, signer: Signer) -> None:
        check_key_document(signer.public_key_document)
        self._signer = signer

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[RootKey, bool]:
        """The file root at ``path`` (PKCS#8 PEM, 0600, directory 0700), created if absent."""
        created = False
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path.parent, 0o700)
            pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                created = True
        return cls.load(path), created

    @classmethod
    def load(cls, path: Path) -> RootKey:
        """The file root at ``path``; :class:`TrustError` ``bad_root_key`` if missing or unsafe."""
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            raise TrustError("bad_root_key", f"no root key at {path}") from None
        if mode & 0o077:
            raise TrustError("bad_root_key", f"root key {path} is accessible by group/others (mode {mode:04o})")
        private_key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TrustError("bad_root_key", f"{path} is not an Ed25519 private key")
        doc = make_key_document(private_key.public_key(), created="1970-01-01T00:00:00.000000Z")
        return cls(Ed25519Signer(private_key, doc))

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    def trusted_root(self) -> TrustedRoot:
        doc = self._signer.public_key_document
        return TrustedRoot(key_id=doc.key_id, public_key=doc.public_key)

    def policy(self) -> TrustPolicy:
        return TrustPolicy(format=POLICY_FORMAT, roots=(self.trusted_root(),))

    def certify(self, store: WormStore, chain_id: str, key: KeyDocument, from_seq: int, origin: str) -> str:
        """Write the certificate of ``key`` on ``chain_id`` from ``from_seq`` (once); returns its store key.

        Idempotent: a valid certificate already there for the same chain, key,
        seq and origin (an earlier attempt) is kept.
        """
        store_key = layout.certificate_key(chain_id, from_seq, key.key_id)
        data = issue_certificate(self._signer, chain_id, key, from_seq, origin)
        try:
            store.put_once(store_key, data)
        except ObjectExists:
            existing = decode_certificate(store_key, store.get(store_key), {self.key_id: self._raw_public()})
            if existing.origin != origin or existing.key != key:
                raise TrustError(
                    "bad_certificate", f"{store_key} already holds another certificate (origin {existing.origin!r})"
                ) from None
        return store_key

    def _raw_public(self) -> bytes:
        return base64.b64decode(self._signer.public_key_document.public_key)


def certificate_hash(cert: Certificate) -> bytes:
    return hashlib.sha256(canonical_bytes(cert)).digest()


def issue_certificate(
    root: Signer, chain_id: str, key: KeyDocument, from_seq: int, origin: str, issued_at: str | None = None
) -> bytes:
    """The canonical bytes of a signed certificate (§5a)."""
    layout.check_chain_id(chain_id)
    check_key_document(key)
    cert = Certificate(
        chain_id=chain_id,
        format=CERTIFICATE_FORMAT,
        from_seq=from_seq,
        issued_at=issued_at or utc_now(),
        key=key,
        origin=origin,
        root_key_id=root.key_id,
    )
    signature = root.sign(CERTIFICATE_DOMAIN + certificate_hash(cert))
    return canonical_bytes(SignedCertificate(certificate=cert, signature=base64.b64encode(signature).decode()))


def decode_certificate(store_key: str, data: bytes, roots: dict[str, bytes]) -> Certificate:
    """Strictly read one certificate object and check its root signature; raises :class:`TrustError`."""
    named = layout.parse_certificate_key(store_key)
    if named is None:
        raise TrustError("bad_certificate", f"{store_key}: not a certificate name")
    try:
        signed = _certificate_decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise TrustError("bad_certificate", f"{store_key}: {exc}") from None
    cert = signed.certificate
    if canonical_bytes(signed) != data:
        raise TrustError("bad_certificate", f"{store_key}: not canonical JSON")
    if cert.format != CERTIFICATE_FORMAT:
        raise TrustError("bad_certificate", f"{store_key}: format must be {CERTIFICATE_FORMAT!r}")
    if (cert.chain_id, cert.from_seq, cert.key.key_id) != named:
        raise TrustError(
            "bad_certificate", f"{store_key}: the name does not match the certificate's chain, seq and key"
        )
    try:
        check_key_document(cert.key)
    except KeyDocumentError as exc:
        raise TrustError("bad_certificate", f"{store_key}: {exc}") from None
    raw_root = roots.get(cert.root_key_id)
    if raw_root is None:
        raise TrustError(
            "untrusted_root", f"{store_key}: signed by {cert.root_key_id}, which the trust policy does not hold"
        )
    signature = _b64_signature(signed.signature)
    try:
        if signature is None:
            raise InvalidSignature
        Ed25519PublicKey.from_public_bytes(raw_root).verify(signature, CERTIFICATE_DOMAIN + certificate_hash(cert))
    except InvalidSignature:
        raise TrustError("bad_certificate", f"{store_key}: the root signature does not verify") from None
    return cert


def _b64_signature(text: str) -> bytes | None:
    return _canonical_b64(text, 64)


# --- anchoring a chain -----------------------------------------------------------------------


def key_valid_at(timeline: Sequence[tuple[int, str]], seq: int) -> str | None:
    """The key that signs record ``seq`` (= the chain's key after ``seq`` records, spec §5),
    from a chain's (first seq, key id) timeline. The one copy of this rule."""
    current = None
    for first, key_id in timeline:
        if first <= seq:
            current = key_id
    return current


class ChainAnchors:
    """A chain's valid certificates, and the checks of its key timeline against them.

    The one place where "is this chain anchored?" is decided; the verifier,
    the reader, replay and the writer all ask here.
    """

    def __init__(
        self, chain_id: str, certificates: Iterable[Certificate] = (), problems: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        self.chain_id = chain_id
        self._certs: dict[tuple[int, str], Certificate] = {(c.from_seq, c.key.key_id): c for c in certificates}
        self.problems = list(problems)
        """(reason, store key, message) for certificate objects that could not be used."""
        self._used: set[tuple[int, str]] = set()

    def certificate(self, from_seq: int, key_id: str) -> Certificate | None:
        return self._certs.get((from_seq, key_id))

    def check_key(self, from_seq: int, key: KeyDocument | str, origin: str | None = None) -> Certificate:
        """The certificate that lets ``key`` sign on this chain from ``from_seq``; else :class:`TrustError`.

        ``key`` is the key document from the chain (genesis or rotation body)
        or, where only the id is at hand, the key id; ``origin`` is checked for
        ``from_seq`` 0 (the chain's creation).
        """
        key_id = key if isinstance(key, str) else key.key_id
        reason = "uncertified_chain" if from_seq == 0 else "uncertified_key"
        cert = self._certs.get((from_seq, key_id))
        what = "chain creation" if from_seq == 0 else f"key rotation at seq {from_seq - 1}"
        if cert is None:
            raise TrustError(
                reason,
                f"chain {self.chain_id}: {key_id} from seq {from_seq} ({what}) has no certificate by a trusted root",
            )
        if not isinstance(key, str) and cert.key.public_key != key.public_key:
            raise TrustError(reason, f"chain {self.chain_id}: the certificate of {key_id} holds another public key")
        if from_seq == 0 and origin is not None and cert.origin != origin:
            raise TrustError(reason, f"chain {self.chain_id}: origin {origin!r} is not the certified {cert.origin!r}")
        self._used.add((from_seq, key_id))
        return cert

    def check_timeline(self, timeline: Sequence[tuple[int, KeyDocument | str]], origin: str | None) -> None:
        for from_seq, key in timeline:
            self.check_key(from_seq, key, origin)

    def certificate_at(self, from_seq: int) -> Certificate | None:
        return next((c for (f, _), c in sorted(self._certs.items()) if f == from_seq), None)

    def latest_at(self, seq: int) -> Certificate | None:
        """For a chain whose records are gone: the certificate in effect at ``seq`` by the certificates alone."""
        found = [c for (f, _), c in sorted(self._certs.items()) if f <= seq]
        return found[-1] if found else None

    def for_key(self, key_id: str, seq: int) -> Certificate | None:
        """The certificate letting ``key_id`` sign record ``seq`` by itself (the timeline aside)."""
        found = [c for (f, k), c in sorted(self._certs.items()) if k == key_id and f <= seq]
        return found[-1] if found else None

    def public_key(self, from_seq: int, key_id: str) -> bytes:
        """The certified raw public key (call after :meth:`check_key` succeeded)."""
        return base64.b64decode(self._certs[(from_seq, key_id)].key.public_key)

    def unused(self) -> list[Certificate]:
        return [c for k, c in sorted(self._certs.items()) if k not in self._used]


def load_anchors(
    store: WormStore, chain_id: str, policy: TrustPolicy, items: Iterable[tuple[str, bytes]] | None = None
) -> ChainAnchors:
    """Read and check every certificate of ``chain_id`` (or the given ``(key, bytes)`` items)."""
    roots = policy.root_keys()
    if items is None:
        items = ((key, store.get(key)) for key in sorted(store.list_keys(layout.certificates_prefix(chain_id))))
    certs: list[Certificate] = []
    problems: list[tuple[str, str, str]] = []
    for key, data in items:
        try:
            certs.append(decode_certificate(key, data, roots))
        except TrustError as exc:
            problems.append((exc.reason, key, exc.message))
    return ChainAnchors(chain_id, certs, problems)
