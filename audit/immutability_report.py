"""The immutability test's report: the evidence document's structs and its two renderings.

Why a module of its own: the report is the test's output contract. The
evidence document (``verdict.immutability/v1``, JSON with sorted keys) is
hashed and filed in the trail, and CI reads the JUnit XML; neither may change
shape when probes or backends are added, and neither depends on a backend.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import msgspec

from verdict.audit.chain import Receipt
from verdict.audit.stores.probes import FAILED, SKIPPED, ProbeResult

__all__ = [
    "FORMAT",
    "ChainState",
    "CheckpointState",
    "FiledEvidence",
    "ImmutabilityReport",
    "Outcome",
    "ProbeResult",
    "TrailState",
    "encode_report",
    "junit_xml",
]

FORMAT = "verdict.immutability/v1"


class CheckpointState(msgspec.Struct, frozen=True):
    size: int
    key: str
    sha256: str
    version: str | None = None


class ChainState(msgspec.Struct, frozen=True):
    chain_id: str
    records: int
    head_hash: str | None
    last_checkpoint: CheckpointState | None = None


class TrailState(msgspec.Struct, frozen=True):
    ok: bool
    records: int
    objects: int
    failure_count: int
    chains: list[ChainState]
    first_failure: str | None = None
    notes: int = 0
    elapsed_s: float = 0.0


class ImmutabilityReport(msgspec.Struct, frozen=True):
    """The evidence document, stored at ``evidence/sha256/<sha256 of its bytes>``."""

    format: str
    run_id: str
    started: str
    finished: str
    store: str
    backend: str
    evidence_chain: str
    host: str
    user: str
    software: str
    result: str
    """"passed" (no FAILED probe) or "failed"."""
    counts: dict[str, int]
    failed: list[str]
    probes: list[ProbeResult]
    trail: TrailState | None
    canary_prefix: str
    previous_evidence: str | None = None
    notes: list[str] = []


class FiledEvidence(msgspec.Struct, frozen=True):
    object_key: str
    sha256: str
    receipt: Receipt


class Outcome(msgspec.Struct, frozen=True):
    report: ImmutabilityReport
    filed: FiledEvidence | None
    filing_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.report.result == "passed" and self.filed is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> bytes:
        data = msgspec.to_builtins(self.report)
        data["filed"] = msgspec.to_builtins(self.filed) if self.filed is not None else None
        data["filing_error"] = self.filing_error
        return msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"


def encode_report(report: ImmutabilityReport) -> bytes:
    """The stored bytes of an evidence document (sorted keys, 2-space indent, final newline)."""
    data = msgspec.json.encode(msgspec.to_builtins(report), order="sorted")
    return msgspec.json.format(data, indent=2) + b"\n"


def junit_xml(outcome: Outcome) -> bytes:
    """One <testcase> per probe (plus the evidence filing); FAILED → <failure>, skipped → <skipped>."""
    report = outcome.report
    cases = list(report.probes)
    total_time = sum(p.elapsed_s for p in cases)
    failures = sum(1 for p in cases if p.status == FAILED) + (0 if outcome.filed else 1)
    skipped = sum(1 for p in cases if p.status == SKIPPED)
    suites = ET.Element(
        "testsuites",
        name="verdict-immutability",
        tests=str(len(cases) + 1),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{total_time:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"immutability[{report.backend}]",
        tests=str(len(cases) + 1),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{total_time:.3f}",
        timestamp=report.started,
        hostname=report.host,
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", report.run_id),
        ("store", report.store),
        ("result", report.result),
        ("evidence_chain", report.evidence_chain),
        ("evidence_object", outcome.filed.object_key if outcome.filed else ""),
        (
            "evidence_record",
            f"{outcome.filed.receipt.chain_id}/{outcome.filed.receipt.seq} {outcome.filed.receipt.record_hash}"
            if outcome.filed
            else "",
        ),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for probe in cases:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"immutability.{report.backend}.{probe.target}",
            name=probe.name,
            time=f"{probe.elapsed_s:.3f}",
        )
        body = msgspec.json.format(
            msgspec.json.encode(
                {
                    "operation": probe.operation,
                    "required": probe.required,
                    "status": probe.status,
                    "evidence": probe.evidence,
                }
            ),
            indent=2,
        )
        if probe.status == FAILED:
            failure = ET.SubElement(case, "failure", message=probe.detail, type="FAILED")
            failure.text = body.decode()
        elif probe.status == SKIPPED:
            ET.SubElement(case, "skipped", message=probe.detail)
        out = ET.SubElement(case, "system-out")
        out.text = f"{probe.status}: {probe.detail}\n" + body.decode()
    case = ET.SubElement(
        suite, "testcase", classname=f"immutability.{report.backend}.evidence", name="evidence_filed", time="0"
    )
    if outcome.filed is None:
        failure = ET.SubElement(
            case, "failure", message=f"the evidence was not filed: {outcome.filing_error}", type="FAILED"
        )
        failure.text = outcome.filing_error or ""
    else:
        out = ET.SubElement(case, "system-out")
        out.text = (
            f"{outcome.filed.object_key} recorded at {outcome.filed.receipt.chain_id} seq "
            f"{outcome.filed.receipt.seq} ({outcome.filed.receipt.record_hash}), key {outcome.filed.receipt.key_id}"
        )
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
