"""Reading a logged decision's personal data for a service, in the services' own terms.

Why one function: a repeated request, a lookup, a subject-access export and
the console all open sealed decisions, and all must answer the same way when
they cannot — an erased decision is 410 naming its erasure record, a
ciphertext that does not authenticate is an integrity failure, a keyring
that cannot be reached is "try again" (fail closed) — never a 500, never the
ciphertext shown as if it were the answer.
"""

from __future__ import annotations

import sqlite3

from verdict.audit.data_keys import DataKeyErased, DataKeyMissing, KeyringError
from verdict.audit.key_wrapping import KekError
from verdict.audit.personal_data import PersonalData
from verdict.audit.records import DecisionBody, SealedInputs
from verdict.audit.sealing import SealError
from verdict.audit.stores import StoreError
from verdict.gateway.service_errors import AuditUnavailable, DecisionErased, InputsSealed, RecordInvalid

__all__ = ["open_decision"]


def open_decision(personal: PersonalData | None, body: DecisionBody, retry_after_s: int = 5) -> DecisionBody:
    """The clear decision ``body`` records (a plain one as it is). Raises DecisionErased,
    InputsSealed (no keyring here, or one without the key), RecordInvalid (reason
    ``sealed_tampered``) or AuditUnavailable (the keyring or its KMS did not answer)."""
    if not isinstance(body.inputs, SealedInputs):
        return body
    if personal is None:
        raise InputsSealed(body.request_id, "this process has no data keyring")
    try:
        return personal.open(body)
    except DataKeyErased as exc:
        e = exc.erasure
        raise DecisionErased(
            body.request_id,
            e.as_dict(),
        ) from None
    except DataKeyMissing:
        raise InputsSealed(
            body.request_id, f"this gateway's data keyring does not hold its key {body.inputs.key_ref}"
        ) from None
    except SealError:
        raise RecordInvalid(body.request_id, "sealed_tampered") from None
    except (StoreError, KekError, KeyringError, sqlite3.Error) as exc:
        raise AuditUnavailable(f"the data keyring cannot be read right now: {exc}", retry_after_s) from None
