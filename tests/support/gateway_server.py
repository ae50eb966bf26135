"""A real ``verdict serve`` process on loopback, for HTTP tests.

The data directory is prepared the way an operator would: the reference
model registered and promoted, API keys created; then the server process is
started and the test waits for /readyz. Nothing in the server is patched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.moto_server import HOST, free_port

__all__ = ["GatewayServer", "prepare_home", "stop_process"]

PROJECT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0


def prepare_home(home: Path, model_dir: Path, store_url: str | None = None) -> dict[str, str]:
    """Register and promote the model, create API keys; return tokens by role."""
    from verdict.audit.stores import open_store
    from verdict.gateway.apikeys import ApiKeyStore
    from verdict.gateway.registry import Registry

    home.mkdir(parents=True, exist_ok=True)
    registry = Registry(open_store(store_url or (home / "store").as_uri()))
    manifest, _ = registry.register(model_dir)
    if registry.alias(manifest.name, "production") is None:
        registry.promote(manifest.name, manifest.version, by="test-setup")
    keys = ApiKeyStore(home / "apikeys.json")
    roles = {
        "client": ["score"],
        "staff": ["explain"],
        "examiner": ["replay"],
        "admin": ["admin"],
        "both": ["score", "explain"],
    }
    return {role: keys.create(scopes, name=role)[1] for role, scopes in roles.items()}


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM (the shutdown hooks run), then SIGKILL if it has not exited within 30 s."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@dataclass
class GatewayServer:
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, *extra: str, wait: bool = True) -> GatewayServer:
        self.starts += 1
        self.log_path = self.home / f"server-{self.starts}.log"
        env = {**os.environ, "VERDICT_HOME": str(self.home), **self.env}
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "verdict", "serve", "--port", str(self.port), "--no-bootstrap", *extra],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"verdict serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"verdict serve not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> GatewayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
