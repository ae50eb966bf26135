"""Open Inference Protocol v2 against /v1 on one gateway: REST JSON, REST binary, gRPC.

One real ``verdict serve`` (audited, explained, sealed: the product), with
gRPC on. Each request is one applicant (one decision) whichever the protocol,
so rates compare decisions/s. Rounds are interleaved (the order rotates), and
the ratio to /v1 is taken within each round; the median and range over
rounds are printed with p50/p99. Target: every v2 way within 10% of /v1
(ratio >= 0.90).

Drivers: wrk (its own process, a Lua script per protocol) for the three REST
ways; benchmarks/grpc_load.py (Python grpc.aio, its own process: no compiled
gRPC load tool installs here) for gRPC, which on 2 cores takes CPU from the
server, so gRPC's figure is a lower bound.

Run: .venv/bin/python benchmarks/gateway_load.py --protocols [--concurrency 16,64] [--rounds 5] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from benchmarks import wrk_driver
from benchmarks._rounds import Sample, compare, concurrencies, warm_up
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.moto_server import free_port
from verdict.gateway.datasets import load_dataset

__all__ = ["model_rows", "protocols_main"]

ROOT = Path(__file__).resolve().parent.parent
MODEL = "german-credit"
TARGET = 0.90
_NUMPY = {"INT64": "<i8", "FP64": "<f8"}


def _encode(datatype: str, value) -> bytes:
    if datatype == "BYTES":
        data = str(value).encode()
        return len(data).to_bytes(4, "little") + data
    return np.array([value], dtype=_NUMPY[datatype]).tobytes()


def _label(way: str) -> str:
    """A way's name as it may appear in a request id."""
    return way.strip("/").replace("/", "-")


def model_rows(inputs: list[dict]) -> list[dict]:
    """200 German credit applicants with the attributes the served version takes (its metadata's inputs)."""
    names = {spec["name"] for spec in inputs}
    return [{k: v for k, v in row.items() if k in names} for row in load_dataset(MODEL).rows[:200]]


def _json_lua(inputs: list[dict], rows: list[dict]) -> str:
    bodies = [
        json.dumps(
            [{"name": s["name"], "datatype": s["datatype"], "shape": [1, 1], "data": [row[s["name"]]]} for s in inputs],
            separators=(",", ":"),
        )
        for row in rows
    ]
    return (
        "local rows = {" + ",".join(wrk_driver.lua_string(b) for b in bodies) + "}\n"
        "function request()\n"
        "  counter = counter + 1\n"
        "  local row = rows[(counter % #rows) + 1]\n"
        "  local body = '{\"id\":\"' .. prefix .. '-' .. thread_id .. '-' .. counter .. '\",\"inputs\":' .. row .. '}'\n"
        f'  return wrk.format("POST", "/v2/models/{MODEL}/infer", '
        '{["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)\n'
        "end\n"
    )


def _binary_lua(inputs: list[dict], rows: list[dict]) -> str:
    tails, raws = [], []
    for row in rows:
        parts = [_encode(s["datatype"], row[s["name"]]) for s in inputs]
        described = [
            {"name": s["name"], "datatype": s["datatype"], "shape": [1, 1], "parameters": {"binary_data_size": len(p)}}
            for s, p in zip(inputs, parts, strict=True)
        ]
        tail = json.dumps({"inputs": described, "parameters": {"binary_data_output": True}}, separators=(",", ":"))
        tails.append('",' + tail[1:])  # continues '{"id":"<id>'
        raws.append(b"".join(parts))
    return (
        "local tails = {" + ",".join(wrk_driver.lua_string(t) for t in tails) + "}\n"
        "local raws = {" + ",".join(wrk_driver.lua_string(r) for r in raws) + "}\n"
        "function request()\n"
        "  counter = counter + 1\n"
        "  local k = (counter % #tails) + 1\n"
        "  local head = '{\"id\":\"' .. prefix .. '-' .. thread_id .. '-' .. counter .. tails[k]\n"
        f'  return wrk.format("POST", "/v2/models/{MODEL}/infer", '
        '{["Content-Type"] = "application/octet-stream", ["Inference-Header-Content-Length"] = tostring(#head), '
        '["Authorization"] = "Bearer " .. token}, head .. raws[k])\n'
        "end\n"
    )


def _grpc(target: str, token: str, rows_file: Path) -> Callable[[int, float, str], Sample]:
    def run(concurrency: int, seconds: float, prefix: str) -> Sample:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "grpc_load.py"), target, token, MODEL, str(rows_file),
             str(concurrency), str(seconds), prefix],
            capture_output=True, text=True, timeout=seconds + 120, cwd=ROOT,
        )  # fmt: skip
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"grpc_load failed: {done.stderr[-2000:]}")
        r = json.loads(line.removeprefix("RESULT "))
        return r["requests"] / r["seconds"], r["p50"], r["p99"], r["errors"]

    return run


def _wrk(url: str, token: str, script: str | None, rows: list[dict]):
    def run(concurrency: int, seconds: float, prefix: str) -> Sample:
        if script is None:
            result = wrk_driver.drive(url, token, rows, concurrency, seconds, prefix)
        else:
            result = wrk_driver.drive_script(url, token, script, concurrency, seconds, prefix)
        return result.rate, result.p50_ms, result.p99_ms, result.errors

    return run


def protocols_main(args: argparse.Namespace, model_dir: Path, work: Path) -> None:
    home = work / "protocols"
    token = prepare_home(home, model_dir)["client"]
    grpc_port = free_port()
    server = GatewayServer(home).start("--grpc-port", str(grpc_port))
    try:
        headers = {"Authorization": f"Bearer {token}"}
        inputs = httpx.get(f"{server.url}/v2/models/{MODEL}", headers=headers, timeout=60).json()["inputs"]
        rows = model_rows(inputs)
        rows_file = work / "grpc-rows.json"
        rows_file.write_text(
            json.dumps([{s["name"]: [s["datatype"], _encode(s["datatype"], r[s["name"]]).decode("latin-1")]
                         for s in inputs} for r in rows])
        )  # fmt: skip
        ways = {
            "/v1": _wrk(server.url, token, None, rows),
            "v2-json": _wrk(server.url, token, _json_lua(inputs, rows), rows),
            "v2-binary": _wrk(server.url, token, _binary_lua(inputs, rows), rows),
            "grpc": _grpc(f"127.0.0.1:{grpc_port}", token, rows_file),
        }
        warm_up(ways, _label)  # also proves each way decides (no errors)
        print(
            f"protocols: one gateway (audited, explained, sealed), gRPC on; one decision per request; "
            f"{args.rounds} interleaved rounds of {args.seconds:g} s; drivers: wrk (REST), "
            f"benchmarks/grpc_load.py (gRPC, Python in its own process: a lower bound)"
        )
        verdicts = compare(ways, "/v1", concurrencies(args.concurrency), args.rounds, args.seconds, TARGET, _label)
        print(f"target (each v2 way >= {TARGET:.2f}x /v1's audited decisions/s): " + "; ".join(verdicts))
    finally:
        server.stop()
