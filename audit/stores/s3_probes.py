"""Immutability probes for the S3 Object Lock store (see audit/immutability.py for the method).

What they establish, probe by probe: the bucket's own settings (versioning,
Object Lock, default COMPLIANCE retention, a deny policy); on throwaway canary
chains, every operation an insider with the service's credentials could try
(unconditional new versions, delete markers, deleting a locked version with
and without the governance bypass, shortening, switching and removing
retention); and, only where the canary twin was refused, the same refused
operations on a real record. Kept beside the store so the S3 specifics live
in one place; what a run lends them comes in a ``ProbeContext``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from verdict.audit.stores.base import (
    ObjectExists,
    ObjectMissing,
    ObjectRef,
    ObjectVersion,
    StoreError,
    StoreUnavailable,
)
from verdict.audit.stores.probes import (
    CANARY_PREFIX,
    ENFORCED,
    EVIDENT,
    FAILED,
    SKIPPED,
    Canary,
    ProbeContext,
    ProbeError,
    ProbeResult,
    probe,
    since,
)
from verdict.audit.stores.s3 import ObjectRetention, S3ObjectLockStore

__all__ = ["S3Probes"]


class S3Probes:
    """The probes for one S3 Object Lock store and one run (an audit.stores.probes.StoreProbes)."""

    kind = "s3"

    def __init__(self, store: S3ObjectLockStore, context: ProbeContext) -> None:
        self.store = store
        self.context = context
        self.client = store.client
        self.bucket = store.bucket
        self.run_id = context.run_id
        self.notes = context.notes
        self._plain_writes: str | None = None  # why canaries are written without lock headers, if they are
        self.canary_results: dict[str, str] = {}
        self._substores: list[S3ObjectLockStore] = []
        self._first_lock: dict[str, Any] | None = None

    # -- helpers

    def _full(self, store: Any, key: str) -> str:
        return f"{store.prefix}/{key}" if store.prefix else key

    def _substore(self, name: str) -> S3ObjectLockStore:
        prefix = "/".join(p for p in (self.store.prefix, f"{CANARY_PREFIX}{self.run_id}", name) if p)
        sub = S3ObjectLockStore(
            self.bucket,
            prefix,
            client=self.client,
            retention_days=self.store.retention_days,
            max_concurrency=4,
            check_bucket=False,
        )
        self._substores.append(sub)
        return sub

    def _canary(self, name: str) -> Canary:
        sub = self._substore(name)
        if self._plain_writes is None:
            try:
                return self.context.write_canary(sub)
            except StoreUnavailable:
                raise  # a transient failure is not a refusal: the probe reports it
            except StoreError as exc:
                # The store's own write path is refused (e.g. a bucket without Object
                # Lock rejects lock headers). Attack plain objects instead, so the report
                # shows what this bucket would let an insider do, and say so.
                self._plain_writes = str(exc)
                self.notes.append(
                    "canaries were written WITHOUT Object Lock headers because the store's write path was refused: "
                    f"{exc}"
                )
                sub = self._substore(name + "-plain")
        return self.context.write_canary(_PlainS3Writes(sub, self.client))

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        """(accepted, what the server said); a refusal is a 4xx; 5xx and network errors raise."""
        try:
            response = fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            said = {"http_status": status, "code": error.get("Code"), "message": error.get("Message")}
            if status >= 500 or status == 0:
                raise ProbeError(f"server error {status} {error.get('Code')}: {error.get('Message')}") from None
            return False, said
        except BotoCoreError as exc:
            raise ProbeError(f"{type(exc).__name__}: {exc}") from None
        said = {k: _plain(v) for k, v in response.items() if k not in ("ResponseMetadata", "Body")}
        said["http_status"] = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return True, said

    def _lock(self, store: Any, key: str, version: str | None) -> dict[str, Any]:
        try:
            r = store.retention(key, version)
        except ObjectMissing:
            return {"exists": False}
        return {"exists": True, "mode": r.mode, "retain_until": _plain(r.retain_until), "legal_hold": r.legal_hold}

    def _intact(self, canary: Canary) -> bool:
        try:
            return canary.store.get(canary.key, canary.version) == canary.data
        except (ObjectMissing, StoreError):
            return False

    def _head(self, canary: Canary) -> dict[str, Any]:
        return self._lock(canary.store, canary.key, canary.version)

    def _locked_compliance(self, lock: dict[str, Any]) -> bool:
        until = lock.get("retain_until")
        return lock.get("mode") == "COMPLIANCE" and until is not None and _parse_dt(until) > _dt.datetime.now(_dt.UTC)

    # -- the run

    def run(self) -> Iterator[ProbeResult]:
        yield from self._bucket_checks()
        for attempt in (
            self.canary_overwrite,
            self.canary_new_version,
            self.canary_delete_marker,
            self.canary_delete_version,
            self.canary_delete_bypass,
            self.canary_shorten_retention,
            self.canary_change_lock_mode,
            self.canary_remove_retention,
        ):
            result = attempt()
            self.canary_results[result.name] = result.status
            yield result
            if result.name == "canary_overwrite":
                yield self._lock_on_write()
        yield from self._record_probes()

    def _lock_on_write(self) -> ProbeResult:
        op = "HeadObject of a canary written through the store's write path: ObjectLockMode and retain-until"
        lock = self._first_lock
        days = self.store.retention_days
        evidence = {"lock": lock, "store_retention_days": days, "plain_writes": self._plain_writes}
        if self._plain_writes is not None:
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"the store's write path is refused by this bucket: {self._plain_writes}",
                evidence,
            )
        if lock is None or not self._locked_compliance(lock):
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"a freshly written object is not locked in COMPLIANCE mode: {lock}",
                evidence,
            )
        remaining = _parse_dt(lock["retain_until"]) - _dt.datetime.now(_dt.UTC)
        if remaining < _dt.timedelta(days=days) - _dt.timedelta(hours=1):
            return ProbeResult(
                "store_lock_on_write",
                "canary",
                op,
                ENFORCED,
                FAILED,
                f"retention is only {remaining} where the store asks for {days} days",
                evidence,
            )
        return ProbeResult(
            "store_lock_on_write",
            "canary",
            op,
            ENFORCED,
            ENFORCED,
            f"every write is locked: COMPLIANCE until {lock['retain_until']} ({days} days)",
            evidence,
        )

    def cleanup(self) -> None:
        for sub in self._substores:
            sub.close()

    def _bucket_checks(self) -> Iterator[ProbeResult]:
        started = time.perf_counter()
        try:
            report = self.store.bucket_protection_report()
        except StoreError as exc:
            for name in ("bucket_versioning", "bucket_object_lock", "bucket_default_retention"):
                yield ProbeResult(
                    name,
                    "bucket",
                    "read the bucket configuration",
                    ENFORCED,
                    FAILED,
                    f"cannot read the bucket configuration: {exc}",
                    elapsed_s=since(started),
                )
            return
        facts = msgspec.to_builtins(report)
        yield ProbeResult(
            "bucket_versioning",
            "bucket",
            "GetBucketVersioning",
            ENFORCED,
            ENFORCED if report.versioning_status == "Enabled" else FAILED,
            "versioning is Enabled: an overwrite adds a version, the original stays readable by VersionId"
            if report.versioning_status == "Enabled"
            else f"versioning is {report.versioning_status or 'not enabled'}: an overwrite replaces the original bytes",
            facts,
            since(started),
        )
        yield ProbeResult(
            "bucket_object_lock",
            "bucket",
            "GetObjectLockConfiguration",
            ENFORCED,
            ENFORCED if report.object_lock_enabled else FAILED,
            "Object Lock is enabled on the bucket"
            if report.object_lock_enabled
            else "Object Lock is NOT enabled: nothing stops a version from being deleted (it can only be enabled at bucket creation)",
            facts,
            since(started),
        )
        period = (
            f"{report.default_retention_days} days"
            if report.default_retention_days
            else (f"{report.default_retention_years} years" if report.default_retention_years else "no period")
        )
        ok = report.default_retention_mode == "COMPLIANCE" and bool(
            report.default_retention_days or report.default_retention_years
        )
        yield ProbeResult(
            "bucket_default_retention",
            "bucket",
            "GetObjectLockConfiguration (default retention rule)",
            ENFORCED,
            ENFORCED if ok else FAILED,
            f"default retention COMPLIANCE, {period}: objects written without lock headers are locked too"
            if ok
            else f"default retention is {report.default_retention_mode or 'not set'} ({period}): a write without lock "
            f"headers would not be locked in COMPLIANCE mode",
            facts,
            since(started),
        )
        yield self._bucket_policy()

    @probe(
        "bucket_policy",
        "bucket",
        "GetBucketPolicy: deny statements for unconditional puts, deletes, retention changes and governance bypass",
        EVIDENT,
    )
    def _bucket_policy(self) -> tuple[str, str, dict[str, Any]]:
        accepted, said = self._call(self.client.get_bucket_policy, Bucket=self.bucket)
        if not accepted:
            return (
                EVIDENT,
                (
                    f"no bucket policy ({said.get('code')}): unconditional overwrites and delete markers are allowed and only "
                    f"evident (see the canary probes); deploy/terraform adds the policy that denies them"
                ),
                said,
            )
        try:
            policy = json.loads(said.get("Policy") or "{}")
        except ValueError:
            return EVIDENT, "the bucket policy is not JSON", said
        denied = set()
        for statement in policy.get("Statement", []):
            if statement.get("Effect") != "Deny":
                continue
            actions = statement.get("Action")
            for action in [actions] if isinstance(actions, str) else actions or []:
                denied.add(action)
        wanted = {
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutObjectRetention",
            "s3:BypassGovernanceRetention",
        }
        missing = sorted(
            wanted - denied - ({"s3:DeleteObject", "s3:DeleteObjectVersion"} if "s3:*" in denied else set())
        )
        evidence = {"deny_actions": sorted(denied), "missing": missing}
        if missing:
            return EVIDENT, f"the bucket policy has no Deny for {', '.join(missing)}", evidence
        return (
            ENFORCED,
            (
                "the bucket policy denies unconditional puts, deletes, retention changes and governance bypass "
                "(whether the endpoint evaluates bucket policies is shown by the canary probes)"
            ),
            evidence,
        )

    # -- canary probes

    @probe(
        "canary_overwrite",
        "canary",
        "PutObject with If-None-Match: * on an existing key (the store's write path)",
        ENFORCED,
    )
    def canary_overwrite(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_overwrite")
        evidence: dict[str, Any] = {
            "key": self._full(canary.store, canary.key),
            "version": canary.version,
            "lock": self._head(canary),
        }
        self._first_lock = evidence["lock"]
        try:
            ref = canary.store.put_once(canary.key, canary.tampered)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            evidence["original_intact"] = self._intact(canary)
            if evidence["original_intact"]:
                return ENFORCED, "412 PreconditionFailed: the existing object was not touched", evidence
            return FAILED, "the write was refused but the original can no longer be read back", evidence
        evidence["accepted_version"] = ref.version
        return (
            FAILED,
            "the conditional write was ACCEPTED over an existing object (If-None-Match not honoured)",
            self._aftermath(canary, evidence),
        )

    @probe(
        "canary_new_version", "canary", "PutObject without If-None-Match over an existing key (tampered bytes)", EVIDENT
    )
    def canary_new_version(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_new_version")
        full = self._full(canary.store, canary.key)
        accepted, said = self._call(self.client.put_object, Bucket=self.bucket, Key=full, Body=canary.tampered)
        evidence: dict[str, Any] = {"key": full, "version": canary.version, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            return ENFORCED, f"refused ({said.get('code')}): unconditional overwrites are denied", evidence
        return self._judge_allowed(canary, evidence, "a new version was written over the record")

    @probe("canary_delete_marker", "canary", "DeleteObject without VersionId (adds a delete marker)", EVIDENT)
    def canary_delete_marker(self) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary("canary_delete_marker")
        full = self._full(canary.store, canary.key)
        accepted, said = self._call(self.client.delete_object, Bucket=self.bucket, Key=full)
        evidence: dict[str, Any] = {"key": full, "version": canary.version, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            return ENFORCED, f"refused ({said.get('code')}): deletes are denied", evidence
        return self._judge_allowed(canary, evidence, "the key was deleted (delete marker)")

    @probe("canary_delete_version", "canary", "DeleteObject with the VersionId of a locked version", ENFORCED)
    def canary_delete_version(self) -> tuple[str, str, dict[str, Any]]:
        return self._delete_version("canary_delete_version", bypass=False)

    @probe(
        "canary_delete_bypass",
        "canary",
        "DeleteObject with the VersionId and x-amz-bypass-governance-retention: true",
        ENFORCED,
    )
    def canary_delete_bypass(self) -> tuple[str, str, dict[str, Any]]:
        return self._delete_version("canary_delete_bypass", bypass=True)

    def _delete_version(self, name: str, *, bypass: bool) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary(name)
        full = self._full(canary.store, canary.key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": canary.version or "null"}
        if bypass:
            kwargs["BypassGovernanceRetention"] = True
        before = self._head(canary)
        accepted, said = self._call(self.client.delete_object, **kwargs)
        evidence: dict[str, Any] = {"key": full, "version": canary.version, "lock_before": before, "server": said}
        if not accepted:
            evidence["original_intact"] = self._intact(canary)
            if not evidence["original_intact"]:
                return FAILED, "refused, but the version can no longer be read back", evidence
            return ENFORCED, f"refused ({said.get('code')}): the locked version cannot be deleted", evidence
        evidence["original_intact"] = self._intact(canary)
        detected, findings = self.context.verifier_flags(canary.store)
        evidence["verifier_findings"] = findings
        return (
            FAILED,
            (
                "the version was DELETED"
                + (" with the governance-bypass header" if bypass else "")
                + f" (lock before: {before.get('mode')} until {before.get('retain_until')}); the original bytes are gone"
                + ("; the verifier notices the gap" if detected else "; the verifier did NOT notice")
            ),
            evidence,
        )

    @probe(
        "canary_shorten_retention",
        "canary",
        "PutObjectRetention: COMPLIANCE with an earlier retain-until date",
        ENFORCED,
    )
    def canary_shorten_retention(self) -> tuple[str, str, dict[str, Any]]:
        earlier = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        return self._retention_change(
            "canary_shorten_retention",
            {"Mode": "COMPLIANCE", "RetainUntilDate": earlier},
            "COMPLIANCE retention was SHORTENED (to a date in the past)",
            consequence_bypass=False,
        )

    @probe("canary_change_lock_mode", "canary", "PutObjectRetention: switch COMPLIANCE to GOVERNANCE", ENFORCED)
    def canary_change_lock_mode(self) -> tuple[str, str, dict[str, Any]]:
        return self._retention_change(
            "canary_change_lock_mode",
            {"Mode": "GOVERNANCE"},
            "the lock was switched from COMPLIANCE to GOVERNANCE",
            consequence_bypass=True,
        )

    @probe(
        "canary_remove_retention", "canary", "PutObjectRetention with an empty retention (remove the lock)", ENFORCED
    )
    def canary_remove_retention(self) -> tuple[str, str, dict[str, Any]]:
        return self._retention_change(
            "canary_remove_retention", {}, "the retention was REMOVED", consequence_bypass=False
        )

    def _retention_change(
        self, name: str, retention: dict[str, Any], what: str, *, consequence_bypass: bool
    ) -> tuple[str, str, dict[str, Any]]:
        canary = self._canary(name)
        full = self._full(canary.store, canary.key)
        before = self._head(canary)
        evidence: dict[str, Any] = {"key": full, "version": canary.version, "lock_before": before}
        if not self._locked_compliance(before):
            return (
                FAILED,
                (
                    f"the canary written through the store's write path is not locked in COMPLIANCE mode "
                    f"({before.get('mode')} until {before.get('retain_until')}): there is no lock to protect records"
                ),
                evidence,
            )
        if retention.get("Mode") == "GOVERNANCE":
            retention = {"Mode": "GOVERNANCE", "RetainUntilDate": _parse_dt(before["retain_until"])}
        accepted, said = self._call(
            self.client.put_object_retention,
            Bucket=self.bucket,
            Key=full,
            VersionId=canary.version or "null",
            Retention=retention,
        )
        evidence["server"] = said
        evidence["lock_after"] = self._head(canary)
        if not accepted:
            if evidence["lock_after"] != before:
                return FAILED, "refused, yet the lock changed", evidence
            return ENFORCED, f"refused ({said.get('code')}): the COMPLIANCE lock cannot be weakened", evidence
        # Show what the weakened lock allows: delete the canary version.
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": canary.version or "null"}
        if consequence_bypass:
            kwargs["BypassGovernanceRetention"] = True
        deleted, delete_said = self._call(self.client.delete_object, **kwargs)
        evidence["then_delete_version"] = {
            "bypass_header": consequence_bypass,
            "accepted": deleted,
            "server": delete_said,
        }
        return (
            FAILED,
            (
                f"{what}: {before.get('mode')} until {before.get('retain_until')} became "
                f"{evidence['lock_after'].get('mode')} until {evidence['lock_after'].get('retain_until')}"
                + ("; the version could then be DELETED" if deleted else "; deleting the version was still refused")
            ),
            evidence,
        )

    def _judge_allowed(self, canary: Canary, evidence: dict[str, Any], what: str) -> tuple[str, str, dict[str, Any]]:
        self._aftermath(canary, evidence)
        if evidence["original_intact"] and evidence["verifier_detects"]:
            return (
                EVIDENT,
                f"allowed: {what}; the original version is still readable by its VersionId and the verifier flags it",
                evidence,
            )
        if not evidence["original_intact"]:
            return FAILED, f"allowed: {what}, and the ORIGINAL BYTES ARE GONE (no versioning?)", evidence
        return FAILED, f"allowed: {what}, and the verifier did NOT notice", evidence

    def _aftermath(self, canary: Canary, evidence: dict[str, Any]) -> dict[str, Any]:
        evidence["original_intact"] = self._intact(canary)
        try:
            evidence["versions_now"] = [
                {"version": v.version, "delete_marker": v.is_delete_marker, "latest": v.is_latest}
                for v in canary.store.list_versions(canary.key)
                if v.key == canary.key
            ]
        except StoreError as exc:
            evidence["versions_now"] = f"unreadable: {exc}"
        detected, findings = self.context.verifier_flags(canary.store)
        evidence["verifier_detects"] = detected
        evidence["verifier_findings"] = findings
        return evidence

    # -- real records (refused operations only)

    def _record_probes(self) -> Iterator[ProbeResult]:
        target = self.context.pick_record(self.store)
        if target is None:
            for name in (
                "record_overwrite",
                "record_delete_version",
                "record_delete_bypass",
                "record_shorten_retention",
                "record_change_lock_mode",
            ):
                yield ProbeResult(
                    name,
                    "record",
                    "(no record to probe)",
                    ENFORCED,
                    SKIPPED,
                    "the store holds no audit record to probe (the evidence chain could not be created either)",
                )
            return
        key, version, data = target
        yield self.record_overwrite(key, version, data)
        lock = self._lock(self.store, key, version)
        yield self._gated(
            "record_delete_version", "canary_delete_version", key, version, lock, self._record_delete(bypass=False)
        )
        yield self._gated(
            "record_delete_bypass", "canary_delete_bypass", key, version, lock, self._record_delete(bypass=True)
        )
        yield self._gated(
            "record_shorten_retention", "canary_shorten_retention", key, version, lock, self._record_shorten
        )
        yield self._gated("record_change_lock_mode", "canary_change_lock_mode", key, version, lock, self._record_mode)

    @probe(
        "record_overwrite",
        "record",
        "PutObject with If-None-Match: * of the record's own bytes on its key (the store's write path)",
        ENFORCED,
    )
    def record_overwrite(self, key: str, version: str | None, data: bytes) -> tuple[str, str, dict[str, Any]]:
        evidence: dict[str, Any] = {"key": self._full(self.store, key), "version": version}
        try:
            ref = self.store.put_once(key, data)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            return ENFORCED, "412 PreconditionFailed: the record's key cannot be written again", evidence
        evidence["returned_version"] = ref.version
        if version is not None and ref.version == version:
            # botocore retried the PUT, S3 answered 412, and the store recognised the existing
            # version as holding exactly these bytes: the existing object was returned, not replaced.
            return ENFORCED, "412 PreconditionFailed (after a retry): the existing version was left as it was", evidence
        return (
            FAILED,
            (
                "the conditional write was ACCEPTED on a real record's key (identical bytes were written, so no "
                "content changed, but the key now has another version)"
            ),
            evidence,
        )

    def _gated(
        self,
        name: str,
        twin: str,
        key: str,
        version: str | None,
        lock: dict[str, Any],
        attack: Callable[[str, str, str | None, dict[str, Any]], tuple[bool, dict[str, Any]]],
    ) -> ProbeResult:
        started = time.perf_counter()
        operation = {
            "record_delete_version": "DeleteObject with the record's VersionId",
            "record_delete_bypass": "DeleteObject with the record's VersionId and the governance-bypass header",
            "record_shorten_retention": "PutObjectRetention: the record's retain-until date minus one second",
            "record_change_lock_mode": "PutObjectRetention: GOVERNANCE instead of COMPLIANCE, same date",
        }[name]
        full = self._full(self.store, key)
        evidence: dict[str, Any] = {"key": full, "version": version, "lock": lock, "canary_twin": twin}
        if self.canary_results.get(twin) != ENFORCED:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                SKIPPED,
                f"not run on a real record: the same operation was not refused on a canary ({twin}: "
                f"{self.canary_results.get(twin)}), so it could destroy evidence",
                evidence,
                since(started),
            )
        if not self._locked_compliance(lock):
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                f"the record is not locked in COMPLIANCE mode with a future date ({lock.get('mode')} until "
                f"{lock.get('retain_until')})",
                evidence,
                since(started),
            )
        try:
            accepted, said = attack(full, key, version, lock)
        except (ProbeError, StoreError) as exc:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                f"could not complete the probe: {exc}",
                evidence,
                since(started),
            )
        evidence.update(said)
        if accepted:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                "ACCEPTED on a real record although refused on its canary",
                evidence,
                since(started),
            )
        evidence["lock_after"] = self._lock(self.store, key, version)
        if evidence["lock_after"] != lock:
            return ProbeResult(
                name,
                "record",
                operation,
                ENFORCED,
                FAILED,
                "refused, yet the record's lock changed",
                evidence,
                since(started),
            )
        return ProbeResult(
            name,
            "record",
            operation,
            ENFORCED,
            ENFORCED,
            f"refused ({said['server'].get('code')}) on a real record; its lock is unchanged",
            evidence,
            since(started),
        )

    def _record_delete(self, *, bypass: bool) -> Callable[..., tuple[bool, dict[str, Any]]]:
        def attack(full: str, key: str, version: str | None, lock: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "VersionId": version or "null"}
            if bypass:
                kwargs["BypassGovernanceRetention"] = True
            accepted, said = self._call(self.client.delete_object, **kwargs)
            return accepted, {"server": said}

        return attack

    def _record_shorten(
        self, full: str, key: str, version: str | None, lock: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        until = _parse_dt(lock["retain_until"])
        return self._retention_attack(full, version, "COMPLIANCE", until - _dt.timedelta(seconds=1), until)

    def _record_mode(
        self, full: str, key: str, version: str | None, lock: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        until = _parse_dt(lock["retain_until"])
        return self._retention_attack(full, version, "GOVERNANCE", until, until)

    def _retention_attack(
        self, full: str, version: str | None, mode: str, until: _dt.datetime, original: _dt.datetime
    ) -> tuple[bool, dict[str, Any]]:
        """Try to set a record's retention to ``mode`` until ``until``; if the store accepts
        (never expected after the canary gate), put COMPLIANCE until ``original`` back
        (extending is always allowed) and say so in the evidence."""

        def retain(mode: str, until: _dt.datetime) -> tuple[bool, Any]:
            return self._call(
                self.client.put_object_retention,
                Bucket=self.bucket,
                Key=full,
                VersionId=version or "null",
                Retention={"Mode": mode, "RetainUntilDate": until},
            )

        accepted, said = retain(mode, until)
        out: dict[str, Any] = {"server": said}
        if accepted:
            out["restored"] = retain("COMPLIANCE", original)[1]
        return accepted, out


class _PlainS3Writes:
    """Canary writes WITHOUT lock headers (If-None-Match only), for buckets that refuse
    the store's own write path; reads and listings go through the S3 store."""

    def __init__(self, store: S3ObjectLockStore, client: Any) -> None:
        self._store = store
        self._client = client
        self.url = store.url + " (plain writes)"
        self.prefix = store.prefix
        self.versioned = store.versioned

    def put_once(self, key: str, data: bytes) -> ObjectRef:
        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            response = self._client.put_object(Bucket=self._store.bucket, Key=full, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise ObjectExists(key, "If-None-Match refused the write") from None
            raise StoreError(f"plain PutObject {full}: {exc}") from None
        version = response.get("VersionId")
        return ObjectRef(key=key, version=None if version in (None, "null") else version)

    def put_many_once(self, items: Sequence[tuple[str, bytes]]) -> list[ObjectRef]:
        refs, conflict = [], None
        for key, data in items:
            try:
                refs.append(self.put_once(key, data))
            except ObjectExists as exc:
                conflict = conflict or exc
        if conflict is not None:
            raise conflict
        return refs

    def prestage(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Ignored, as on the S3 store."""

    def get(self, key: str, version: str | None = None) -> bytes:
        return self._store.get(key, None if version in (None, "null") else version)

    def exists(self, key: str) -> bool:
        return self._store.exists(key)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return self._store.list_keys(prefix)

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        return self._store.list_versions(prefix)

    def retention(self, key: str, version: str | None = None) -> ObjectRetention:
        return self._store.retention(key, None if version in (None, "null") else version)


def _parse_dt(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
