"""Where the API's signing keys and trust root live, and how a verifying call gets its policy.

Why a *home*: the embedded set-up keeps its private material outside the
store, in a data directory (``$VERDICT_HOME``, default ``./var``): signing
keys in ``keys/``, the trust root in ``trust/root.pem``, held checkpoints in
``trust/held/``. The API takes that directory as an explicit ``home``
argument (default: the same data directory as the CLI), so one process can
serve several homes and the CLI works on what the API wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, overload

from verdict._errors import TrustPolicyRequired, VerdictError
from verdict.audit.config import data_dir
from verdict.audit.signing import FileKeyStore, Signer
from verdict.audit.trust import RootKey, TrustError, TrustPolicy, load_policy, local_root_path

__all__ = ["PolicySource", "load_trust_policy", "resolve_home", "signing_identity", "trust_policy", "verify_policy"]

PolicySource = TrustPolicy | str | os.PathLike[str]
"""A trust policy, or the path of a policy file (``verdict trust export``)."""


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """The explicit home, else the CLI's data directory (``$VERDICT_HOME`` or ``./var``)."""
    return Path(home).absolute() if home is not None else data_dir()


def keyring_home(home: Path) -> Path:
    """The data keyring of ``home`` (``$VERDICT_KEYRING`` overrides it, as for the CLI)."""
    return Path(os.environ.get("VERDICT_KEYRING") or home / "keyring")


def trust_policy(home: str | os.PathLike[str] | None = None) -> TrustPolicy:
    """The trust policy of ``home``'s root: what ``verdict trust export`` writes.

    Hand it (``policy.encode()``) to whoever verifies the trail; they keep it
    apart from the store, since the store is what is being checked."""
    path = local_root_path(resolve_home(home))
    try:
        return RootKey.load(path).policy()
    except TrustError as exc:
        raise VerdictError(f"no trust root in {resolve_home(home)}: {exc.message}") from None


def load_trust_policy(path: str | os.PathLike[str]) -> TrustPolicy:
    """Read and check a trust policy file (roots, witnesses, quorum)."""
    try:
        return load_policy(path)
    except TrustError as exc:
        raise VerdictError(exc.message) from None


@overload
def verify_policy(trust: PolicySource | None, unanchored: Literal[False]) -> TrustPolicy: ...
@overload
def verify_policy(trust: PolicySource | None, unanchored: bool) -> TrustPolicy | None: ...
def verify_policy(trust: PolicySource | None, unanchored: bool) -> TrustPolicy | None:
    """The policy a verifying call uses, or None when explicitly unanchored.

    The CLI's rule (``--trust`` / ``--unanchored``), without its environment
    fallbacks: a library call says what it trusts."""
    if unanchored:
        if trust is not None:
            raise VerdictError("trust= and unanchored=True exclude each other")
        return None
    if trust is None:
        raise TrustPolicyRequired(
            "no trust policy: pass trust= (a TrustPolicy, e.g. verdict.trust_policy(home), or the path of the file "
            "`verdict trust export` wrote), or unanchored=True to verify against the keys found in the store, "
            "which proves nothing against whoever can write to it"
        )
    if isinstance(trust, TrustPolicy):
        return trust
    return load_trust_policy(trust)


def signing_identity(home: Path) -> tuple[Signer, FileKeyStore, RootKey]:
    """``home``'s signing key and trust root, each created on first use (as ``verdict serve`` does).

    The root certifies every chain this key signs, so verifiers holding the
    root's policy accept the trail; it stays outside the store."""
    keys = FileKeyStore(home / "keys")
    signer, _ = keys.init()
    try:
        root, _ = RootKey.load_or_create(local_root_path(home))
    except TrustError as exc:
        raise VerdictError(exc.message) from None
    return signer, keys, root
