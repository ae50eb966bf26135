"""Interrupted replays resume where they stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import msgspec
import pytest

from tests.replay.conftest import cli, report_of
from tests.support.gateway_server import PROJECT
from verdict.replay.batch import ReplayInterrupted, ReplayJob, replays_dir, run_replay
from verdict.replay.trail import Selection


def test_stopped_replay_resumes_without_redoing_finished_chunks(at_trail, monkeypatch):
    monkeypatch.setenv("VERDICT_REPLAY_CHUNK", "64")
    stop = threading.Event()
    seen: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "replaying":
            seen.append(done)
            if done >= 64:
                stop.set()

    job = ReplayJob(
        store_url=at_trail.store_url, selection=Selection(model="german-credit", version="1.0.0"), workers=0
    )
    with pytest.raises(ReplayInterrupted) as interrupted:
        run_replay(job, progress=progress, stop=stop)
    replay_id = interrupted.value.replay_id
    assert 64 <= interrupted.value.done < interrupted.value.total == len(at_trail.production)
    lines = (replays_dir() / replay_id / "progress.jsonl").read_bytes().splitlines()
    assert len(lines) == 1  # one chunk of 64 verdicts made durable

    resumed: list[int] = []
    outcome = run_replay(resume=replay_id, progress=lambda p, d, t: resumed.append(d) if p == "replaying" else None)
    assert outcome.replay_id == replay_id
    assert resumed[0] == 64  # started after the finished chunk
    report = outcome.report
    assert report.timing.resumed == 1 and report.timing.replayed_now == len(at_trail.production) - 64
    assert report.summary.identical == report.summary.decisions == len(at_trail.production)
    assert [d.request_id for d in report.decisions] == at_trail.production
    with pytest.raises(Exception, match="already finished"):
        run_replay(resume=replay_id)


@pytest.mark.slow
def test_killed_cli_replay_resumes_with_resume_latest(at_trail):
    env = {**os.environ, "VERDICT_HOME": str(at_trail.home), "VERDICT_REPLAY_CHUNK": "16"}
    env.pop("VERDICT_STORE", None)
    before = set(replays_dir().glob("rpl-*")) if replays_dir().exists() else set()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verdict.replay.cli",
            "--model",
            "german-credit:1.0.0-tight",
            "--workers",
            "0",
            "--no-progress",
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    progress_file = None
    while time.monotonic() < deadline:
        new = [p for p in replays_dir().glob("rpl-*") if p not in before] if replays_dir().exists() else []
        if new and (new[0] / "progress.jsonl").exists() and (new[0] / "progress.jsonl").stat().st_size > 0:
            progress_file = new[0] / "progress.jsonl"
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    assert progress_file is not None, process.communicate()
    process.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
    process.wait(timeout=30)
    done_lines = len(progress_file.read_bytes().splitlines())
    assert not (progress_file.parent / "done.json").exists()

    result = cli("--resume", "latest")
    assert result.exit_code == 0, result.output
    report = report_of(result)["report"]
    assert report["replay_id"] == progress_file.parent.name
    assert report["timing"]["resumed"] == 1
    assert report["timing"]["replayed_now"] <= len(at_trail.tight) - 16 * min(done_lines, 1)
    assert report["summary"]["identical"] == len(at_trail.tight)
    saved = msgspec.json.decode((progress_file.parent / "job.json").read_bytes())
    assert [t[0] for t in saved["targets"]] == at_trail.tight
