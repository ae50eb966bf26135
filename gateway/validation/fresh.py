"""The fresh-process check: the same rows, the same bits, in two new processes.

Why two, in parallel: one fresh process agreeing with this one could be luck
of start-up order; two started together, each loading the artifact from the
model directory as serving does, and all three agreeing bit for bit at both
buckets is what a replay in a new process relies on. They run side by side
because each spends seconds importing torch (the check's whole cost).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from verdict.gateway.runtime import LoadedModel
from verdict.gateway.validation.behaviour import probe_outputs
from verdict.gateway.validation.report import Check
from verdict.gateway.validation.rows import ProbeRows

__all__ = ["PROCESSES", "TIMEOUT_S", "fresh_process_check"]

PROCESSES = 2
TIMEOUT_S = 300
_PROBE = "verdict.gateway.validation.probe"


def fresh_process_check(directory: Path, runtime: LoadedModel, probes: ProbeRows, artifact_sha256: str) -> Check:
    name = "fresh_processes"
    manifest = runtime.manifest
    buckets = f"buckets {manifest.runtime.score_bucket} and {manifest.runtime.explain_bucket}"
    env = dict(os.environ)  # the children inherit this process's settings, given explicitly
    with tempfile.TemporaryDirectory(prefix="verdict-validate-") as tmp:
        rows = Path(tmp) / "rows.npy"
        np.save(rows, np.ascontiguousarray(probes.matrix, dtype=np.float32), allow_pickle=False)
        outs = [Path(tmp) / f"out-{i}.bin" for i in range(PROCESSES)]
        children = [
            subprocess.Popen(
                [sys.executable, "-m", _PROBE, str(directory), str(rows), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for out in outs
        ]
        here = probe_outputs(runtime, probes.matrix)  # meanwhile, this process's bits
        results = []
        for child in children:
            try:
                stdout, stderr = child.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                stdout, stderr = "", f"did not finish within {TIMEOUT_S} s"
            results.append((child.returncode, stdout.strip(), stderr.strip()))
        produced = [out.read_bytes() if out.exists() else b"" for out in outs]
    for i, (code, stdout, stderr) in enumerate(results):
        if code != 0 or not produced[i]:
            tail = stderr.splitlines()[-1] if stderr else "no output"
            return Check(name, False, f"fresh process {i + 1} failed (exit {code}): {tail[:400]}", rule="fresh.run")
        if stdout.splitlines()[-1:] != [artifact_sha256]:
            return Check(
                name,
                False,
                f"fresh process {i + 1} loaded an artifact hashing to {stdout[-64:]!r}, not {artifact_sha256}: "
                f"the directory changed during validation",
                rule="fresh.artifact",
            )
    digests = [hashlib.sha256(data).hexdigest() for data in (here, *produced)]
    measured: dict[str, float | int | str] = {
        "processes": PROCESSES,
        "rows": len(probes.matrix),
        "outputs_sha256": digests[0],
    }
    if len(set(digests)) != 1:
        mine = np.frombuffer(here, dtype=np.uint32)
        worst = ""
        for i, data in enumerate(produced):
            theirs = np.frombuffer(data, dtype=np.uint32)
            if theirs.shape != mine.shape:
                worst = f"process {i + 1} returned {theirs.size} values, this one {mine.size}"
                break
            differ = np.flatnonzero(theirs != mine)
            if len(differ):
                j = int(differ[0])
                n = len(probes.matrix)
                where = f"{probes.labels[j % n]} at the {'score' if j < n else 'explain'} bucket"
                worst = f"process {i + 1} differs on {len(differ)} values (first: {where})"
                break
        for i, digest in enumerate(digests[1:], start=1):
            measured[f"process_{i}_sha256"] = digest
        return Check(
            name,
            False,
            f"fresh processes disagree with this one at {buckets}: {worst}: the model's bits depend on process "
            f"state (start-up, threads, a cache), so a replay would not reproduce them",
            rule="fresh.bit_identical",
            measured=measured,
        )
    return Check(
        name,
        True,
        f"{PROCESSES} fresh processes and this one give bit-identical outputs for {len(probes.matrix)} rows at "
        f"{buckets} (sha256 {digests[0][:16]}...)",
        rule="fresh.bit_identical",
        measured=measured,
    )
