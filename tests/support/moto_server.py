"""A real moto S3 server in its own process, on loopback, for tests.

Tests talk to it with ordinary boto3 clients over HTTP, exactly as the
gateway talks to S3; nothing is patched in the test process.

State: moto keeps every bucket and object in the server process's memory.
``stop()`` + ``start()`` or ``restart()`` therefore comes back EMPTY: no
buckets, no objects, no versions. A test that restarts the server mid-load
must recreate its bucket (e.g. ``create_audit_bucket``) before expecting
writes to succeed again; until then the store reports the missing bucket as
``StoreConfigurationError``. While the process is down every call fails with
a connection error (``StoreUnavailable``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["MotoServer", "MotoServerError", "free_port"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0


class MotoServerError(RuntimeError):
    """The moto server did not start (the message carries its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 as a subprocess.

    >>> with MotoServer() as server:
    ...     boto3.client("s3", endpoint_url=server.endpoint_url)
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None) -> None:
        self._log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="moto-server-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._starts = 0

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise MotoServerError("moto server was never started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, port: int | None = None) -> MotoServer:
        """Start on ``port`` (default: a free one); return once it answers HTTP."""
        if self.running:
            raise MotoServerError(f"moto server already running at {self.endpoint_url}")
        self.port = port if port is not None else free_port()
        self._starts += 1
        self.log_path = self._log_dir / f"moto-{self.port}-{self._starts}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until stop()
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self._fail(f"moto server exited with code {self.process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        self.stop()
        self._fail(f"moto server did not answer within {START_TIMEOUT_S:.0f} s (last error: {last_error})")

    def _fail(self, why: str) -> None:
        log = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        raise MotoServerError(
            f"{why}; command: {sys.executable} -m moto.server -H {HOST} -p {self.port}\n"
            f"--- log {self.log_path} ---\n{log[-4000:]}"
        )

    def stop(self) -> None:
        """Terminate the process and wait for it (kill if it does not exit in 5 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> MotoServer:
        """Stop, then start again on the SAME port (state is lost, see module docs)."""
        port = self.port
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the old socket may linger for a moment
            try:
                return self.start(port)
            except MotoServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def __enter__(self) -> MotoServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
