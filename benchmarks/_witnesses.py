"""Witness processes on loopback for the benchmarks (issue 15), and counting what they cosigned.

Each witness is a real ``python -m verdict.audit.witness_cli serve`` process with its
own state directory, key and port, as a third party would run it; the
benchmarks start them the way tests/gateway/test_http_witnessing.py does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.witness_process import WitnessProcess  # noqa: E402


def start_witnesses(workdir: Path, prefix: str, count: int, logs: dict[str, Sequence[str]]) -> list[WitnessProcess]:
    """``count`` witness processes named ``<prefix>-<i>``, each its own state dir and port, all started."""
    started: list[WitnessProcess] = []
    try:
        for i in range(1, count + 1):
            started.append(WitnessProcess(workdir / f"{prefix}-{i}", f"{prefix}-{i}", logs).start())
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(witnesses: Iterable[WitnessProcess]) -> None:
    for witness in witnesses:
        witness.stop()


def cosigned_counts(
    store,
    chain_ids: Iterable[str],
    witnesses: Sequence[WitnessProcess],
) -> tuple[dict[str, int], int]:
    """({witness name: checkpoints whose cosignature by it verifies}, largest cosigned size), read from
    the store's ``chains/<id>/cosigned/`` objects of ``chain_ids``."""
    from verdict.audit import layout
    from verdict.audit.cosignature import verify_cosignatures

    counts = {w.name: 0 for w in witnesses}
    vkeys = [w.vkey for w in witnesses]
    largest = 0
    for chain_id in chain_ids:
        for key in store.list_keys(layout.cosigned_prefix(chain_id)):
            for name in verify_cosignatures(store.get(key), vkeys):
                counts[name] += 1
            largest = max(largest, layout.number_from_key(key) or 0)
    return counts, largest


def latest_checkpoint(store, chain_id: str) -> int:
    """The size of the chain's newest checkpoint (0 if none)."""
    from verdict.audit import layout

    keys = store.list_keys(layout.checkpoints_prefix(chain_id))
    return max((layout.number_from_key(k) or 0 for k in keys), default=0)


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (Linux /proc; 0 where unreadable)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


def pids(witnesses: Iterable[WitnessProcess]) -> list[int]:
    return [w.process.pid for w in witnesses if w.process is not None]
