"""The house has no cycles: no module of audit/, gateway/ or replay/ imports one that
(directly or not) imports it back, counting imports inside functions too (issue 16).
And audit/ never imports torch (an examiner verifies a trail without it). And only the
HTTP layer speaks HTTP: services raise domain errors, never problems."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "gateway", "replay")

HTTP_LAYER = {
    "verdict.gateway.app": "routes, wiring and lifecycle",
    "verdict.gateway.problems": "domain errors and framework exceptions -> application/problem+json",
    "verdict.gateway.request_body": "the gate every JSON body passes before a route sees it",
    "verdict.gateway.auth": "bearer API keys as Litestar guards",
    "verdict.gateway.commands.serve": "`verdict serve`: runs the app on uvicorn",
    "verdict.audit.witness_server": "the witness's own HTTP API",
    "verdict.gateway.openapi_contract": "the OpenAPI document of the HTTP API: guards, problem statuses",
    "verdict.gateway.openapi_pages": "the HTTP API's documentation pages",
    "verdict.gateway.inference_http": "the Open Inference Protocol's REST routes (its own error body)",
    "verdict.gateway.inference_grpc": "the same protocol over gRPC: the HTTP API's guard errors and their statuses",
    "verdict.gateway.console.routes": "the console's pages: sessions, forms and redirects over HTTP",
}
"""The modules allowed to import what HTTP_ONLY names, and why each is HTTP."""

HTTP_ONLY = (
    "litestar",
    "verdict.gateway.app",
    "verdict.gateway.auth",
    "verdict.gateway.problems",
    "verdict.gateway.request_body",
)
"""The framework and the gateway's modules that speak it (statuses, problems, guards)."""


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            name = ".".join(("verdict", *path.relative_to(PROJECT).with_suffix("").parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node, less ``if TYPE_CHECKING:`` blocks (imports for type checkers only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported_names(path: Path) -> set[str]:
    """Every absolute name imported at run time: ``from a.b import c`` gives ``a.b`` and ``a.b.c``."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in _imported_names(path) if name in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_audit_never_imports_torch():
    for path in (PROJECT / "audit").rglob("*.py"):
        names = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(_package_of(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(_package_of(node.module))
        assert not names & {"torch", "verdict.gateway", "verdict.replay", "shap"}, path


def _package_of(module: str) -> str:
    """``torch.nn`` -> ``torch``; ``verdict.gateway.x`` -> ``verdict.gateway``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "verdict" else parts[0]


def _http_imports(path: Path) -> set[str]:
    """What ``path`` imports of HTTP_ONLY (a module or anything in it)."""
    return {name for name in _imported_names(path) if any(name == m or name.startswith(m + ".") for m in HTTP_ONLY)}


def test_only_the_http_layer_speaks_http():
    """Services (decisions, lookups, replays, their assembly) raise the domain errors of
    gateway.service_errors and know nothing of statuses, headers or the framework: a
    module outside HTTP_LAYER that imports Litestar or an HTTP module (problems above
    all) has put HTTP back into a service."""
    modules = _modules()
    assert set(HTTP_LAYER) <= set(modules), "HTTP_LAYER names a module that no longer exists"
    assert "verdict.gateway.problems" in _http_imports(modules["verdict.gateway.app"])  # the reader sees imports
    offenders = {name: sorted(_http_imports(path)) for name, path in modules.items() if name not in HTTP_LAYER}
    assert {name: found for name, found in offenders.items() if found} == {}


LAZY = "# lazy:"
"""The reason an import stays inside a function (issue 16): it would load something
heavy (torch, shap, matplotlib, boto3, litestar, uvicorn) into a light entry point, or
load a command's machinery into ``verdict --help``; the rest of the reason follows."""


def _function_local_imports(tree: ast.AST) -> list[tuple[ast.stmt, ast.stmt | None]]:
    """Every run-time import inside a function (any depth), with the statement before it
    in the same block (None if it is the block's first), in source order."""
    found: dict[int, tuple[ast.stmt, ast.stmt | None]] = {}
    for function in _runtime_nodes(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in (function, *_runtime_nodes(function)):
            for _, statements in ast.iter_fields(node):
                if not isinstance(statements, list):
                    continue
                for i, statement in enumerate(statements):
                    if isinstance(statement, (ast.Import, ast.ImportFrom)):
                        found[statement.lineno] = (statement, statements[i - 1] if i else None)
    return [found[line] for line in sorted(found)]


def _lazy_import_files() -> list[Path]:
    files = [path for package in PACKAGES for path in sorted((PROJECT / package).rglob("*.py"))]
    return files + sorted((PROJECT / "verdict").glob("*.py"))


def _unexplained_lazy_imports(path: Path) -> list[int]:
    """Lines of function-local imports with no ``# lazy:`` reason on their line or the
    line above. One reason covers a run of imports (one isort block, blank lines between
    its sections included): an import right after an explained import is explained."""
    lines = path.read_text().splitlines()
    explained: set[int] = set()
    missing = []
    for node, before in _function_local_imports(ast.parse("\n".join(lines))):
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        follows = isinstance(before, (ast.Import, ast.ImportFrom)) and before.lineno in explained
        if LAZY in lines[node.lineno - 1] or above.startswith(LAZY) or follows:
            explained.add(node.lineno)
        else:
            missing.append(node.lineno)
    return missing


def test_every_function_local_import_says_why():
    """Imports belong at the top of the module, where the dependency graph can be read;
    one that stays inside a function says why on its line or the line above
    (``# lazy: boto3 only for s3:// stores``)."""
    missing = [
        f"{path.relative_to(PROJECT)}:{line}"
        for path in _lazy_import_files()
        for line in _unexplained_lazy_imports(path)
    ]
    assert missing == [], f"function-local imports without a `{LAZY}` reason: {missing}"


def test_the_lazy_import_check_sees_function_local_imports(tmp_path):
    """The walker is not vacuous: it finds the boto3 import of the S3 backend's opener,
    and flags an unexplained import, but not the rest of an explained block."""
    stores = PROJECT / "audit" / "stores" / "__init__.py"
    found = [ast.unparse(node) for node, _ in _function_local_imports(ast.parse(stores.read_text()))]
    assert "from verdict.audit.stores.s3 import S3ObjectLockStore" in found
    assert _unexplained_lazy_imports(stores) == []
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "\n"
        "def f():\n"
        "    # lazy: a reason\n"
        "    import json\n"
        "    import csv\n"
        "\n"
        "    from os import path\n"
        "    print(path)\n"
        "    import re\n"
        "    if os.sep:\n"
        "        import shlex  # lazy: on the line\n"
        "    def g():\n"
        "        import glob\n"
        "    return json, csv, re, shlex, g\n"
    )
    assert _unexplained_lazy_imports(sample) == [10, 14]
