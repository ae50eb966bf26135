#!/usr/bin/env bash
# Regenerate the Open Inference Protocol's messages (gateway/oip/*_pb2.py[i]) from the
# vendored .proto (kserve/open-inference-protocol, Apache-2.0), with the dev lock's grpcio-tools.
# The generated files are checked in; tests/gateway/test_inference_tensors.py checks they match.
# No servicer code is generated: gateway/inference_grpc.py registers the service's RPCs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
out="${1:-gateway/oip}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Laid out under verdict/gateway/oip so that the generated imports name the installed package.
mkdir -p "$work/verdict/gateway/oip"
cp gateway/oip/open_inference_grpc.proto "$work/verdict/gateway/oip/"
"$PY" -m grpc_tools.protoc -I "$work" --python_out="$work" --pyi_out="$work" \
  verdict/gateway/oip/open_inference_grpc.proto
mkdir -p "$out"
cp "$work"/verdict/gateway/oip/open_inference_grpc_pb2{.py,.pyi} "$out/"
