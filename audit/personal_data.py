"""Personal data on the trail: sealing decisions as they are recorded, opening them for
those entitled to read them (spec §3a, docs/compliance.md).

Why one place: the gateway seals, and lookups, subject access, the console
and replay open; all must agree on which key seals what, on what an erased
key means (a decision that is gone, never a crash) and on where the keyring
is. :func:`configured_keyring` is that place for configuration
(``VERDICT_KEYRING``, ``VERDICT_KEYRING_KEK``); :class:`PersonalData` for
sealing and opening.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from verdict.audit.config import data_dir
from verdict.audit.data_keys import Assignment, DataKeyErased, DataKeyMissing, DataKeyring
from verdict.audit.key_wrapping import KekError, KeyWrapper, KmsKek, LocalKek
from verdict.audit.records import DecisionBody, SealedInputs, format_time, parse_time
from verdict.audit.sealing import SealError, open_sealed, seal

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MIN_RETENTION_DAYS",
    "DataKeyErased",
    "DataKeyMissing",
    "PersonalData",
    "RetentionPolicy",
    "SealError",
    "configured_keyring",
    "existing_personal_data",
    "keyring_directory",
    "keyring_exists",
    "sealed_key_ref",
]

MIN_RETENTION_DAYS = 183
"""Six months: the least the EU AI Act (Art. 19, 26(6)) lets a high-risk system keep its logs."""
DEFAULT_RETENTION_DAYS = 1827
"""Five years: what credit-file record keeping commonly requires (docs/compliance.md)."""


class RetentionPolicy:
    """Days each model's decisions are kept (``name=days`` pairs, ``*`` for the rest).

    Parsed from text like ``"*=1827,marketing-propensity=365"``; any figure below
    six months is refused (:data:`MIN_RETENTION_DAYS`)."""

    def __init__(self, days: Mapping[str, int]) -> None:
        for name, value in days.items():
            if value < MIN_RETENTION_DAYS:
                raise ValueError(
                    f"retention for {name!r} is {value} days; the least allowed is {MIN_RETENTION_DAYS} "
                    f"(six months, EU AI Act Art. 19/26(6))"
                )
        self.days = dict(days)
        self.days.setdefault("*", DEFAULT_RETENTION_DAYS)

    @classmethod
    def parse(cls, text: str) -> RetentionPolicy:
        days: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().removesuffix("d").isdigit():
                raise ValueError(f"retention {part!r} is not NAME=DAYS (e.g. '*=1827,my-model=365')")
            days[name.strip()] = int(value.strip().removesuffix("d"))
        return cls(days)

    def days_for(self, model: str) -> int:
        return self.days.get(model, self.days["*"])

    def retain_until(self, model: str, decided_at: str) -> str:
        """When a decision of ``model`` made at ``decided_at`` may be erased."""
        return format_time(parse_time(decided_at) + _dt.timedelta(days=self.days_for(model)))


def keyring_directory(location: str | None = None) -> Path:
    """``location``, else ``$VERDICT_KEYRING``, else ``<data dir>/keyring`` (outside the store)."""
    return Path(location or os.environ.get("VERDICT_KEYRING") or data_dir() / "keyring")


def configured_keyring(location: str | None = None, kek: str | None = None) -> DataKeyring:
    """The data keyring: ``keyring.sqlite`` in :func:`keyring_directory`, its keys wrapped
    by ``kek`` (else ``$VERDICT_KEYRING_KEK``): ``""``/``"local"`` = the key file
    ``kek.key`` beside it (created with a new keyring), ``"kms:<key id>"`` = that AWS KMS key.

    A keyring database whose local KEK file is missing is refused (KekError), never given a
    new KEK: that would make every key in it unreadable (docs/compliance.md, "Backups")."""
    directory = keyring_directory(location)
    choice = kek if kek is not None else os.environ.get("VERDICT_KEYRING_KEK", "")
    wrapper: KeyWrapper
    if choice.startswith("kms:"):
        wrapper = KmsKek.connect(choice.removeprefix("kms:"))
    elif choice in {"", "local"}:
        kek_path = directory / "kek.key"
        if (directory / "keyring.sqlite").exists() and not kek_path.exists():
            raise KekError(
                f"the data keyring {directory / 'keyring.sqlite'} exists but its key-encryption key {kek_path} "
                f"is missing: restore kek.key from its backup (a new one would unwrap none of the keys)"
            )
        wrapper, _ = LocalKek.load_or_create(kek_path)
    else:
        raise ValueError(f"keyring KEK {choice!r} is neither 'local' nor 'kms:<key id>'")
    return DataKeyring(directory / "keyring.sqlite", wrapper)


def keyring_exists(location: str | None = None) -> bool:
    """Whether a data keyring database is at :func:`keyring_directory`."""
    return (keyring_directory(location) / "keyring.sqlite").exists()


def existing_personal_data(location: str | None = None, kek: str | None = None) -> PersonalData | None:
    """The data keyring if there is one here (readers — replay, exports — never create one:
    on a machine without it, sealed decisions are reported as sealed)."""
    if not keyring_exists(location):
        return None
    return PersonalData(configured_keyring(location, kek))


class PersonalData:
    """Seals decisions under their subjects' keys and opens them again."""

    def __init__(self, keyring: DataKeyring, retention: RetentionPolicy | None = None) -> None:
        self.keyring = keyring
        self.retention = retention or RetentionPolicy({})

    def seal_all(self, bodies: Sequence[DecisionBody], *, now: str) -> list[DecisionBody]:
        """The sealed form of each clear decision; their keys and index rows are durable
        first (one keyring transaction for the batch)."""
        until: dict[tuple[str, str], str] = {}  # a batch shares its models and its decided_at
        for b in bodies:
            if (b.model.name, b.decided_at) not in until:
                until[b.model.name, b.decided_at] = self.retention.retain_until(b.model.name, b.decided_at)
        keys = self.keyring.assign(
            [Assignment(b.request_id, b.subject_id, until[b.model.name, b.decided_at]) for b in bodies], now=now
        )
        return [seal(body, key, key_ref) for body, (key_ref, key) in zip(bodies, keys, strict=True)]

    def open(self, body: DecisionBody) -> DecisionBody:
        """The clear decision; a plain one as it is. Raises DataKeyErased (the subject's data
        was erased), DataKeyMissing (this keyring never held the key) or SealError (the
        ciphertext does not authenticate: tampering)."""
        if not isinstance(body.inputs, SealedInputs):
            return body
        return open_sealed(body, self.keyring.key(body.inputs.key_ref))


def sealed_key_ref(body: DecisionBody) -> str | None:
    """The data key a decision is sealed under (None: not sealed)."""
    return body.inputs.key_ref if isinstance(body.inputs, SealedInputs) else None
