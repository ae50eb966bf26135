"""A closed-loop gRPC load driver for the Open Inference Protocol (ModelInfer), in its own process.

Why Python and not ghz: no compiled gRPC load tool installs from this
machine's registries (ghz is neither a Debian nor a PyPI package). This
driver keeps ``concurrency`` calls in flight on one grpc.aio channel, each a
one-row infer with binary tensors (``raw_input_contents``), and prints one
``RESULT {json}`` line: requests, seconds, p50/p99 latency (ms), errors. On
a 2-core machine it takes CPU from the server it measures, so its figures
are a lower bound for gRPC (benchmarks/protocol_load.py says so beside them).

Run by benchmarks/protocol_load.py:
    python benchmarks/grpc_load.py HOST:PORT TOKEN MODEL ROWS.json CONCURRENCY SECONDS PREFIX
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verdict.gateway.oip import open_inference_grpc_pb2 as pb  # noqa: E402


def _requests(model: str, tensors: list[dict]) -> list[pb.ModelInferRequest]:
    """One request per row: ``tensors[i]`` = {name: [datatype, raw bytes (latin-1 text)]}."""
    out = []
    for row in tensors:
        request = pb.ModelInferRequest(model_name=model)
        for name, (datatype, raw) in row.items():
            request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
            request.raw_input_contents.append(raw.encode("latin-1"))
        out.append(request)
    return out


async def _drive(target: str, token: str, requests: list, concurrency: int, seconds: float, prefix: str) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = 0
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        model_infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal counter, errors
            while time.monotonic() < stop_at:
                counter += 1
                request = pb.ModelInferRequest()
                request.CopyFrom(requests[counter % len(requests)])
                request.id = f"{prefix}-{counter}"
                started = time.perf_counter()
                try:
                    await model_infer(request, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        begun = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - begun
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan"),
        "errors": errors,
    }


def main() -> None:
    target, token, model, rows_file, concurrency, seconds, prefix = sys.argv[1:8]
    requests = _requests(model, json.loads(Path(rows_file).read_text()))
    result = asyncio.run(_drive(target, token, requests, int(concurrency), float(seconds), prefix))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
