"""Witness processes on loopback for the benchmarks (issue 15), and counting what they cosigned.

Each witness is a real ``python -m audit.witness_cli serve`` process with its
own state directory, key and port, as a third party would run it; the
benchmarks start them the way tests/gateway/test_http_witnessing.py does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
POLLS = 240  # bounded polls (0.25 s apart) while a witness starts


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class WitnessProcess:
    """One witness process; ``logs`` maps each origin it witnesses to the log's vkey(s)."""

    def __init__(self, state: Path, name: str, logs: dict[str, Sequence[str]]) -> None:
        from audit.cosignature import encode_witness_vkey
        from audit.witness import load_or_create_key

        self.state, self.name, self.port = state, name, _free_port()
        state.mkdir(parents=True, exist_ok=True)
        (state / "logs.json").write_text(json.dumps(
            {"logs": [{"origin": origin, "vkeys": list(vkeys)} for origin, vkeys in logs.items()]}))
        key, _ = load_or_create_key(state / "witness.pem")
        self.vkey = encode_witness_vkey(name, key.public_key())
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def entry(self):  # noqa: ANN201 - audit.trust.WitnessEntry
        from audit.trust import WitnessEntry

        return WitnessEntry(name=self.name, vkey=self.vkey, url=self.url)

    def start(self) -> WitnessProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "audit.witness_cli", "serve", "--state", str(self.state), "--name", self.name,
             "--logs", str(self.state / "logs.json"), "--port", str(self.port)],
            cwd=ROOT, stdout=open(self.state / "log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115 - the child's
        for _ in range(POLLS):
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"witness {self.name} did not start:\n{(self.state / 'log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


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
    store,  # noqa: ANN001 - a WormStore
    chain_ids: Iterable[str],
    witnesses: Sequence[WitnessProcess],
) -> tuple[dict[str, int], int]:
    """({witness name: checkpoints whose cosignature by it verifies}, largest cosigned size), read from
    the store's ``chains/<id>/cosigned/`` objects of ``chain_ids``."""
    from audit import layout
    from audit.cosignature import verify_cosignatures

    counts = {w.name: 0 for w in witnesses}
    vkeys = [w.vkey for w in witnesses]
    largest = 0
    for chain_id in chain_ids:
        for key in store.list_keys(layout.cosigned_prefix(chain_id)):
            for name in verify_cosignatures(store.get(key), vkeys):
                counts[name] += 1
            largest = max(largest, layout.number_from_key(key) or 0)
    return counts, largest


def latest_checkpoint(store, chain_id: str) -> int:  # noqa: ANN001
    """The size of the chain's newest checkpoint (0 if none)."""
    from audit import layout

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
