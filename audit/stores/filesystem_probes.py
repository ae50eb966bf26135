"""Immutability probes for the filesystem store (see audit/immutability.py for the method).

The filesystem store is tamper-*evident*: its write path refuses an existing
key (link(2) EEXIST) and leaves files read-only, but the service's uid or
root can chmod, rewrite, replace or delete them. These probes show which of
those the host actually prevents (file modes, the ``chattr +i`` immutable
attribute where the kernel permits it) and demonstrate on throwaway canary
chains that the verifier detects the rest. Kept beside the store; what a run
lends them comes in a ``ProbeContext``.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verdict.audit.stores.base import ObjectExists
from verdict.audit.stores.filesystem import FilesystemStore
from verdict.audit.stores.probes import (
    CANARY_PREFIX,
    ENFORCED,
    EVIDENT,
    FAILED,
    SKIPPED,
    Canary,
    ProbeContext,
    ProbeResult,
    probe,
)

__all__ = ["FilesystemProbes"]

# Linux FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (_IOR/_IOW('f', 1|2, long) on 64-bit) and FS_IMMUTABLE_FL.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x00000010


class FilesystemProbes:
    """The probes for one filesystem store and one run (an audit.stores.probes.StoreProbes)."""

    kind = "filesystem"

    def __init__(self, store: FilesystemStore, context: ProbeContext) -> None:
        self.store = store
        self.context = context
        self.run_id = context.run_id
        self.notes = context.notes
        self.canary_root = store.root / CANARY_PREFIX.rstrip("/") / context.run_id
        self._sealed: list[Path] = []
        self._trail_sealed = False

    def run(self) -> Iterator[ProbeResult]:
        target = self.context.pick_record(self.store)
        if target is None:
            yield ProbeResult(
                "fs_record_overwrite",
                "record",
                "(no record to probe)",
                ENFORCED,
                SKIPPED,
                "the store holds no audit record to probe (the evidence chain could not be created either)",
            )
        else:
            yield self.fs_record_overwrite(target[0], target[2])
        yield self.fs_record_modes()
        immutable = self.fs_immutable_attribute()
        yield immutable
        self._trail_sealed = immutable.status == ENFORCED
        yield self.fs_canary_rewrite()
        yield self.fs_canary_replace()
        yield self.fs_canary_delete()

    # -- helpers

    def _trail_files(self) -> list[Path]:
        # Writer leases (audit-format §9a) are coordination objects, not evidence: this
        # run's own evidence writer writes one after the trail may have been sealed.
        return [self.store.root / key for key in self.context.trail_keys(self.store) if "/leases/" not in key]

    def _canary(self, name: str) -> tuple[Canary, Path]:
        sub = FilesystemStore(self.canary_root / name)
        canary = self.context.write_canary(sub)
        path = sub.root / canary.key
        if self._trail_sealed:  # mirror the trail's protection, or the canary proves nothing about it
            for key in sub.list_keys(""):
                _set_immutable(sub.root / key, True)
                self._sealed.append(sub.root / key)
        return canary, path

    def _judge(self, canary: Canary, done: str, evidence: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        detected, findings = self.context.verifier_flags(canary.store)
        evidence["verifier_detects"] = detected
        evidence["verifier_findings"] = findings
        if detected:
            return (
                EVIDENT,
                f"allowed: {done}; the verifier flags it (the filesystem store is tamper-evident, not tamper-proof)",
                evidence,
            )
        return FAILED, f"allowed: {done}, and the verifier did NOT notice", evidence

    def _who(self) -> dict[str, Any]:
        return {"euid": os.geteuid(), "root": os.geteuid() == 0}

    # -- probes

    @probe(
        "fs_record_overwrite",
        "record",
        "the store's write path (link(2), fails if the name exists) on a real "
        "record's key, with the record's own bytes",
        ENFORCED,
    )
    def fs_record_overwrite(self, key: str, data: bytes) -> tuple[str, str, dict[str, Any]]:
        evidence: dict[str, Any] = {"key": key}
        try:
            self.store.put_once(key, data)
        except ObjectExists as exc:
            evidence["refused"] = str(exc)
            return ENFORCED, "the store refuses to write an existing key (link(2) EEXIST)", evidence
        return FAILED, "the store's write path wrote an existing key", evidence

    @probe("fs_record_modes", "filesystem", "stat every trail file: no write permission bits", ENFORCED)
    def fs_record_modes(self) -> tuple[str, str, dict[str, Any]]:
        files = self._trail_files()
        writable, owners = [], set()
        for path in files:
            st = path.stat()
            owners.add(st.st_uid)
            if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                writable.append(f"{path.relative_to(self.store.root)} ({stat.filemode(st.st_mode)})")
        evidence = {"files": len(files), "writable": writable[:10], "owners": sorted(owners), **self._who()}
        if writable:
            return FAILED, f"{len(writable)} trail file(s) have write permission bits", evidence
        return (
            ENFORCED,
            (
                f"all {len(files)} trail files are read-only (0444): other non-root users cannot change them; the owner "
                f"(uid {', '.join(map(str, sorted(owners))) or '-'}) and root can chmod or unlink them (see the canary probes)"
            ),
            evidence,
        )

    @probe(
        "fs_immutable_attribute",
        "filesystem",
        "FS_IOC_GETFLAGS on every trail file; FS_IOC_SETFLAGS (chattr +i, then -i) on a scratch file",
        EVIDENT,
    )
    def fs_immutable_attribute(self) -> tuple[str, str, dict[str, Any]]:
        files = self._trail_files()
        flagged, unsupported = 0, None
        for path in files:
            try:
                if _get_flags(path) & _FS_IMMUTABLE_FL:
                    flagged += 1
            except OSError as exc:
                unsupported = f"{_errno_name(exc)}: {exc.strerror}"
                break
        self.canary_root.mkdir(parents=True, exist_ok=True)
        scratch = self.canary_root / "immutable-scratch"
        scratch.write_bytes(b"scratch\n")
        try:
            _set_immutable(scratch, True)
            _set_immutable(scratch, False)
            why = "permitted (the process has CAP_LINUX_IMMUTABLE and the filesystem supports it)"
        except OSError as exc:
            why = f"not permitted here: {_errno_name(exc)} ({exc.strerror})"
            if exc.errno == errno.EPERM:
                why += "; it needs CAP_LINUX_IMMUTABLE (root on the host, not a default container capability)"
        finally:
            scratch.unlink(missing_ok=True)
        evidence = {
            "files": len(files),
            "immutable": flagged,
            "set_flag": why,
            "read_flags_error": unsupported,
            **self._who(),
        }
        if files and flagged == len(files):
            return (
                ENFORCED,
                f"all {len(files)} trail files carry the immutable attribute (chattr +i): even their owner cannot change or delete them",
                evidence,
            )
        return (
            EVIDENT,
            (
                f"{flagged} of {len(files)} trail files carry the immutable attribute; setting it is {why}. Without it the "
                f"service's uid or root can change or delete files: only the chain, signatures and checkpoints reveal it"
            ),
            evidence,
        )

    @probe(
        "fs_canary_rewrite", "canary", "chmod u+w and rewrite a segment file in place (as this process's uid)", EVIDENT
    )
    def fs_canary_rewrite(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_rewrite")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        try:
            os.chmod(path, 0o644)
            with open(path, "r+b") as fh:
                fh.write(canary.tampered)
        except OSError as exc:
            evidence["refused"] = f"{_errno_name(exc)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was rewritten in place", evidence)

    @probe("fs_canary_replace", "canary", "write a forged file and rename(2) it over a segment", EVIDENT)
    def fs_canary_replace(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_replace")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        forged = path.with_name(path.name + ".forged")
        try:
            forged.write_bytes(canary.tampered)
            os.replace(forged, path)
        except OSError as exc:
            forged.unlink(missing_ok=True)
            evidence["refused"] = f"{_errno_name(exc)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was replaced by a forged file", evidence)

    @probe("fs_canary_delete", "canary", "unlink(2) a segment file", EVIDENT)
    def fs_canary_delete(self) -> tuple[str, str, dict[str, Any]]:
        canary, path = self._canary("fs_canary_delete")
        evidence: dict[str, Any] = {"key": canary.key, "sealed": self._trail_sealed, **self._who()}
        try:
            os.unlink(path)
        except OSError as exc:
            evidence["refused"] = f"{_errno_name(exc)}: {exc.strerror}"
            return ENFORCED, f"refused by the filesystem ({evidence['refused']})", evidence
        return self._judge(canary, "the segment was deleted", evidence)

    def cleanup(self) -> None:
        for path in self._sealed:
            with contextlib.suppress(OSError):
                _set_immutable(path, False)
        try:
            shutil.rmtree(self.canary_root)
            parent = self.canary_root.parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        except OSError as exc:
            self.notes.append(f"canary directory {self.canary_root} could not be removed: {exc}")


def _get_flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        return buf[0]
    finally:
        os.close(fd)


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
        buf[0] = (buf[0] | _FS_IMMUTABLE_FL) if on else (buf[0] & ~_FS_IMMUTABLE_FL)
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, buf, False)
    finally:
        os.close(fd)


def _errno_name(exc: OSError) -> str:
    """The symbolic name of ``exc``'s errno (``EPERM``), else the number as given."""
    if exc.errno is None:
        return "None"
    return errno.errorcode.get(exc.errno, str(exc.errno))
