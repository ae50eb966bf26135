"""A real witness process (``python -m audit.witness_cli serve``) on loopback, for tests and benchmarks.

Each has its own state directory, key and port, as a third party would run
it; start() waits for /healthz with a bounded number of polls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.gateway_server import PROJECT, stop_process
from tests.support.moto_server import HOST, free_port

__all__ = ["WitnessProcess"]

POLLS = 240  # bounded polls (0.25 s apart) while a witness starts


class WitnessProcess:
    """One witness process; ``logs`` maps each origin it witnesses to the log's vkey(s)."""

    def __init__(self, state: Path, name: str, logs: dict[str, Sequence[str]]) -> None:
        from verdict.audit.cosignature import encode_witness_vkey
        from verdict.audit.witness import load_or_create_key

        self.state, self.name, self.port = state, name, free_port()
        state.mkdir(parents=True, exist_ok=True)
        (state / "logs.json").write_text(
            json.dumps({"logs": [{"origin": origin, "vkeys": list(vkeys)} for origin, vkeys in logs.items()]})
        )
        key, _ = load_or_create_key(state / "witness.pem")
        self.vkey = encode_witness_vkey(name, key.public_key())
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def entry(self):
        from verdict.audit.trust import WitnessEntry

        return WitnessEntry(name=self.name, vkey=self.vkey, url=self.url)

    def start(self) -> WitnessProcess:
        with open(self.state / "log", "wb") as log:  # the child writes to its own copy of the descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "verdict.audit.witness_cli",
                    "serve",
                    "--state",
                    str(self.state),
                    "--name",
                    self.name,
                    "--logs",
                    str(self.state / "logs.json"),
                    "--port",
                    str(self.port),
                ],
                cwd=PROJECT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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
        stop_process(self.process)
