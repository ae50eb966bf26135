"""An AWS KMS Ed25519 signer: the chain's private key never leaves the HSM.

Implements :class:`audit.signing.Signer` with an asymmetric KMS key of
``KeySpec=ECC_NIST_EDWARDS25519`` and ``KeyUsage=SIGN_VERIFY``, signing with
``SigningAlgorithm=ED25519_SHA_512`` and ``MessageType=RAW`` (pure Ed25519,
RFC 8032: the very signatures :mod:`audit.signing` verifies; ``ED25519_PH_SHA_512``
is the pre-hashed variant and is NOT what the trail format uses). Nothing in
the trail format changes: the public key is read once with ``GetPublicKey``,
published as an ordinary key document (``keys/ed25519_<hex>.json``), and the
verifier needs no AWS access at all.

Why the key document's ``created`` is the KMS key's ``CreationDate``: key
documents are published write-once, and a writer refuses to sign when the
published document for its key id differs (audit.signing.publish_key); a
signer that stamped "now" would differ on every restart.

Every signature KMS returns is verified locally against the public key before
it is used (about 0.1 ms, next to a 5-20 ms KMS round trip): a wrong key, a
truncated response or a misbehaving proxy can never put an invalid signature
into the write-once trail.

Failures at signing time raise :class:`KmsSigningError`, a
:class:`~audit.stores.base.StoreUnavailable`: the gateway treats an
unreachable or throttling KMS exactly like an unreachable store (503, retry
later, no unaudited decision), and the chain writer has written nothing when
``sign`` fails (records are signed before their segment is written).
Misconfiguration found when the signer is built (wrong key type, disabled
key, no permission) raises :class:`KmsKeyError` with the key and the reason.

Cost: one KMS ``Sign`` call per record and per checkpoint. The chain writer
signs a batch's records one after another, so with KMS a batch of N records
costs N round trips; KMS also has a per-account request quota for asymmetric
signing. Use KMS keys where the volume allows it (the immutability-evidence
and replay chains, low-volume gateways) or file keys on the gateways with
KMS for the evidence chains; see docs/operations.md.

Rotation: KMS keys cannot change their key material; rotating means a new
KMS key (new key id) and a ``key_rotation`` record signed by the old one,
exactly as with file keys (:meth:`audit.chain.ChainWriter.rotate_key`, or
:meth:`ChainWriter.open` with a keyring that can load the old key, e.g.
:class:`KmsKeyRing`). Old records stay verifiable from the published documents
even after the old KMS key is disabled or scheduled for deletion.

Tested against: moto 5.2.5 does NOT support ``ECC_NIST_EDWARDS25519``
(CreateKey answers ValidationException); tests/audit/test_kms.py checks the
refusal of a non-Ed25519 key against moto's real KMS over HTTP, and the
complete signer (including rotation and a verified trail) through boto3
over HTTP against a loopback emulator of DescribeKey, GetPublicKey and Sign
that follows the AWS API reference. No test has run against real AWS KMS.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from verdict.audit.records import format_time
from verdict.audit.signing import DocumentedSigner, make_key_document
from verdict.audit.stores.base import StoreUnavailable

__all__ = [
    "KEY_SPEC",
    "SIGNING_ALGORITHM",
    "KmsEd25519Signer",
    "KmsKeyError",
    "KmsKeyRing",
    "KmsSigningError",
]

KEY_SPEC = "ECC_NIST_EDWARDS25519"
SIGNING_ALGORITHM = "ED25519_SHA_512"
MAX_MESSAGE_BYTES = 4096  # KMS Sign limit for MessageType=RAW
DEFAULT_TIMEOUT_S = 5.0


class KmsKeyError(Exception):
    """The KMS key cannot be used as a Verdict signing key (the message says why)."""


class KmsSigningError(StoreUnavailable):
    """KMS did not produce a valid signature now (unreachable, throttled, disabled key...).

    A StoreUnavailable on purpose: the audit path is down, the caller fails closed
    and retries later, exactly as for an unreachable store.
    """


class KmsEd25519Signer(DocumentedSigner):
    """A :class:`audit.signing.Signer` whose private key is an AWS KMS key.

    ``key_id``: key id, key ARN, alias name (``alias/verdict-gateway-0``) or alias
    ARN. ``client``: a boto3 KMS client to use as is; otherwise one is built from
    the usual AWS configuration (``region``, ``profile``, ``endpoint_url`` or
    ``AWS_ENDPOINT_URL_KMS``) with ``timeout`` for connect and read and at most
    three attempts.
    """

    def __init__(
        self,
        key_id: str,
        *,
        client: Any = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not key_id:
            raise KmsKeyError("a KMS key id, ARN or alias is required")
        if client is None:
            client = _client(region=region, profile=profile, endpoint_url=endpoint_url, timeout=timeout)
        self._client = client
        self.kms_key_ref = key_id
        meta = self._call("DescribeKey", lambda: client.describe_key(KeyId=key_id)["KeyMetadata"], KmsKeyError)
        arn = meta.get("Arn") or key_id
        state = meta.get("KeyState") or ("Enabled" if meta.get("Enabled") else "Disabled")
        if state != "Enabled":
            raise KmsKeyError(f"KMS key {arn} is {state}; only an Enabled key can sign")
        spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
        if spec != KEY_SPEC:
            raise KmsKeyError(f"KMS key {arn} has KeySpec {spec}; Verdict signs with Ed25519 keys ({KEY_SPEC})")
        if meta.get("KeyUsage") != "SIGN_VERIFY":
            raise KmsKeyError(f"KMS key {arn} has KeyUsage {meta.get('KeyUsage')}; it must be SIGN_VERIFY")
        algorithms = meta.get("SigningAlgorithms") or []
        if SIGNING_ALGORITHM not in algorithms:
            raise KmsKeyError(
                f"KMS key {arn} does not offer {SIGNING_ALGORITHM} (offers {', '.join(algorithms) or 'none'})"
            )
        response = self._call("GetPublicKey", lambda: client.get_public_key(KeyId=arn), KmsKeyError)
        try:
            public_key = load_der_public_key(response["PublicKey"])
        except (KeyError, ValueError) as exc:
            raise KmsKeyError(f"KMS key {arn}: GetPublicKey did not return a DER public key: {exc}") from None
        if not isinstance(public_key, Ed25519PublicKey):
            raise KmsKeyError(f"KMS key {arn}: the public key is a {type(public_key).__name__}, not Ed25519")
        created = meta.get("CreationDate")
        if not isinstance(created, _dt.datetime):
            raise KmsKeyError(f"KMS key {arn}: DescribeKey returned no CreationDate")
        self.kms_key_arn = arn
        self._public_key = public_key
        self._document = make_key_document(public_key, format_time(_as_utc(created)))

    def sign(self, message: bytes) -> bytes:
        """Pure Ed25519 over ``message`` by KMS, checked locally before it is returned."""
        if len(message) > MAX_MESSAGE_BYTES:
            raise ValueError(f"KMS signs at most {MAX_MESSAGE_BYTES} raw bytes, got {len(message)}")
        response = self._call(
            "Sign",
            lambda: self._client.sign(
                KeyId=self.kms_key_arn, Message=message, MessageType="RAW", SigningAlgorithm=SIGNING_ALGORITHM
            ),
            KmsSigningError,
        )
        signature = response.get("Signature") or b""
        if response.get("SigningAlgorithm", SIGNING_ALGORITHM) != SIGNING_ALGORITHM or len(signature) != 64:
            raise KmsSigningError(
                f"KMS Sign with {self.kms_key_arn} returned a {len(signature)}-byte "
                f"{response.get('SigningAlgorithm')} signature, expected 64 bytes of {SIGNING_ALGORITHM}"
            )
        try:
            self._public_key.verify(signature, message)
        except InvalidSignature:
            raise KmsSigningError(
                f"KMS Sign with {self.kms_key_arn} returned a signature that does not verify under its own public key "
                f"{self.key_id}; refusing to use it"
            ) from None
        return signature

    def _call(self, operation: str, fn: Any, error: type[Exception]) -> Any:
        # lazy: boto3/botocore only for KMS keys, never for file keys or `verdict audit verify`
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise error(
                f"KMS {operation} on {getattr(self, 'kms_key_arn', self.kms_key_ref)}: {err.get('Code')}: {err.get('Message')}"
            ) from None
        except BotoCoreError as exc:
            raise error(
                f"KMS {operation} on {getattr(self, 'kms_key_arn', self.kms_key_ref)}: {type(exc).__name__}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"KmsEd25519Signer({self.key_id}, {getattr(self, 'kms_key_arn', self.kms_key_ref)})"


class KmsKeyRing:
    """A :class:`audit.chain.KeyRing` over several KMS keys, so a chain writer opened
    with a new KMS key can sign the rotation record with the old one."""

    def __init__(self, signers: list[KmsEd25519Signer]) -> None:
        self._by_id = {s.key_id: s for s in signers}

    @classmethod
    def from_key_ids(cls, key_ids: list[str], **kwargs: Any) -> KmsKeyRing:
        return cls([KmsEd25519Signer(k, **kwargs) for k in key_ids])

    def load(self, key_id: str) -> KmsEd25519Signer:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise KmsKeyError(
                f"no KMS key for {key_id} in this key ring ({', '.join(self._by_id) or 'empty'})"
            ) from None


def _client(*, region: str | None, profile: str | None, endpoint_url: str | None, timeout: float) -> Any:
    # lazy: boto3/botocore only for KMS keys, never for file keys or `verdict audit verify`
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        return session.client(
            "kms",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 3, "mode": "standard"}
            ),
        )
    except (ProfileNotFound, BotoCoreError) as exc:
        raise KmsKeyError(f"cannot create a KMS client: {exc}") from None


def _as_utc(moment: _dt.datetime) -> _dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)
