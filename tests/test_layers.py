"""The house has floors, read from the imports (issue 16):

    audit  <-  engine  <-  replay  <-  services, HTTP and CLI  <-  the public API

A module imports from its own floor and the floors below, never from above:
the audit trail knows nothing of models; the engine (scoring, explaining,
models, registry) knows nothing of replay or of requests; replay runs the
engine's code and knows nothing of HTTP; the services, the HTTP layer and the
command line sit on top; ``verdict``'s public API (``verdict/_*.py``) wraps
them all. The engine is every module of ``gateway/`` that is not in ``FRONT``.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_import_graph import PROJECT, _imports, _modules

FRONT = {
    "verdict.gateway.api_models": "the HTTP wire types",
    "verdict.gateway.apikeys": "API keys and their scopes",
    "verdict.gateway.app": "routes",
    "verdict.gateway.auth": "bearer-key guards",
    "verdict.gateway.batcher": "the request micro-batcher",
    "verdict.gateway.contribution_chart": "the contribution chart (SVG) of a looked-up decision",
    "verdict.gateway.claims": "request-id claims between concurrent requests",
    "verdict.gateway.cli": "the `verdict` command line",
    "verdict.gateway.decisions": "the decision service: claim, decide through the engine, append, answer",
    "verdict.gateway.inference_grpc": "the Open Inference Protocol over gRPC",
    "verdict.gateway.inference_http": "the Open Inference Protocol's REST routes",
    "verdict.gateway.inference_rest": "the Open Inference Protocol's REST bodies (JSON and binary tensors)",
    "verdict.gateway.inference_service": "infer calls as decisions, for REST and gRPC alike",
    "verdict.gateway.inference_tensors": "protocol tensors <-> attributes and recorded decisions",
    "verdict.gateway.lookups": "explanation lookups by request id and subject",
    "verdict.gateway.metrics": "Prometheus metrics of the service",
    "verdict.gateway.openapi_contract": "the OpenAPI document: security, problem statuses, unions",
    "verdict.gateway.openapi_pages": "the API's documentation pages and their vendored assets",
    "verdict.gateway.problems": "domain errors -> application/problem+json",
    "verdict.gateway.replay_reads": "replay reports over HTTP",
    "verdict.gateway.request_body": "request body gate",
    "verdict.gateway.service": "assembling the services of one process",
    "verdict.gateway.settings": "the gateway's settings",
    "verdict.gateway.subject_letter": "the subject-access letter (HTML, PDF) a person reads",
}


def _floor(module: str) -> int:
    if module.startswith("verdict.audit"):
        return 0
    if module.startswith(("verdict.gateway.commands", "verdict.gateway.console")) or module in FRONT:
        return 3
    if module.startswith("verdict.gateway"):
        return 1
    if module.startswith("verdict.replay"):
        return 2
    return 4  # verdict/_*.py: the public API


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    for path in (PROJECT / "verdict").glob("*.py"):
        modules[f"verdict.{path.stem}".removesuffix(".__init__")] = path
    modules["verdict"] = PROJECT / "verdict" / "__init__.py"
    modules.pop("verdict.__init__", None)
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_imports_only_its_own_floor_and_below():
    upward = [
        f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if target != "verdict" and _floor(target) > _floor(module)
    ]
    assert upward == []


def test_the_front_list_names_real_modules():
    for module in FRONT:
        path = PROJECT / Path(*module.split(".")[1:]).with_suffix(".py")
        assert path.is_file(), module


def test_the_floor_check_sees_an_upward_import():
    """The check is not vacuous: the HTTP app does import the replay service and the engine."""
    graph = _graph()
    assert "verdict.replay.service" in graph["verdict.gateway.app"]
    assert "verdict.gateway.engine" in graph["verdict.replay.rescore"]
    assert _floor("verdict.gateway.app") > _floor("verdict.replay.service") > _floor("verdict.gateway.engine")
