"""Entry point of a replay inside a rebuilt virtualenv (replay.rebuild).

``python -m replay._inner IN OUT``: IN is a msgpack InnerJob (store URL,
options, verified record bytes); OUT receives the verdicts and the
fingerprint(s) of this environment. Progress goes to stdout as
``progress <done> <total>`` lines. Records were proven by the outer replay;
this process only re-scores, with this environment's packages and this
project version's own scoring code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from verdict.replay.batch import ReplayJob, _in_workers, plan_chunks
from verdict.replay.rebuild import InnerJob, InnerResult
from verdict.replay.rescore import ReplayOptions, Rescorer
from verdict.replay.trail import Selection, Target


def main(argv: list[str]) -> int:
    job = msgspec.msgpack.decode(Path(argv[1]).read_bytes(), type=InnerJob)
    options = msgspec.msgpack.decode(job.options, type=ReplayOptions)
    opened = job.opened or [b""] * len(job.records)
    targets = [
        Target(request_id=str(i), record=r, opened=o) for i, (r, o) in enumerate(zip(job.records, opened, strict=True))
    ]
    chunks = plan_chunks(targets)
    results = []
    prints: dict[str, bytes] = {}
    done = 0
    if not job.workers:
        rescorer = Rescorer(job.store_url, options)
        for chunk in chunks:
            results += rescorer.rescore([t.record for t in chunk], [t.opened for t in chunk])
            done += len(chunk)
            print(f"progress {done} {len(targets)}", flush=True)
        prints = rescorer.fingerprints_seen
    else:
        outer = ReplayJob(store_url=job.store_url, selection=Selection(all=True), options=options, workers=job.workers)
        for chunk_results, seen in _in_workers(outer, chunks, job.workers, None):
            results += chunk_results
            prints.update(seen)
            done += len(chunk_results)
            print(f"progress {done} {len(targets)}", flush=True)
    Path(argv[2]).write_bytes(msgspec.msgpack.encode(InnerResult(results, prints)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
