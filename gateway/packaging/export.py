"""Loading the user's model and exporting it as Verdict serves models.

Why every check here names a rule: the model contract (design.md, "Models")
is what makes a decision replayable: one float32 ``[batch, d]`` input in
schema order, one float32 value per row out (shape ``[batch]``), a graph that
``torch.export`` can freeze with a *dynamic* batch dimension (the runtime
pads every call to fixed bucket shapes). A model breaking it is refused
here, before anything is written, with the fix in the message ("return
shape [B], got [B, 1]: squeeze the last dimension").

Factories run the user's code: the module beside the spec is imported under
its own name (so the exported graph's module paths do not depend on where
the checkout is) with the spec's folder first on ``sys.path`` for its
helpers; every module imported from that folder is hashed for provenance
and dropped from ``sys.modules`` afterwards, so packaging a second spec in
the same process never sees the first one's helpers.

A pre-exported ``.pt2`` is the user's file too, and ``torch.export.load``
unpickles in places: it is opened only by the validator's reader
(gateway.validation.artifact), which refuses anything pickled unopened, and
its graph must pass the validator's graph checks before it runs on a single
row, so a static batch is named as such, with the fix, rather than as the
guard torch trips over. Torch's own stderr output while exporting or loading
(warnings, a logged traceback, the partial graph) is held back
(gateway.validation.quiet): the refusal says it in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from verdict.gateway.packaging.errors import ModelError
from verdict.gateway.runtime import run_at_bucket
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.validation.artifact import inspect_artifact
from verdict.gateway.validation.graph import contract_checks
from verdict.gateway.validation.quiet import quiet_torch

__all__ = [
    "LoadedModule",
    "check_output",
    "export_program",
    "load_artifact",
    "load_factory",
    "load_weights",
    "module_sources",
    "outputs_at_bucket",
    "run_eager",
]

MAX_BATCH = 1 << 20  # as gateway/training.py: the export allows any batch up to this
_SHOWN = 5  # keys named in a message


@dataclass(frozen=True)
class LoadedModule:
    """The factory's module and the source files that made it (relative name -> path)."""

    module: nn.Module
    sources: dict[str, Path]


def _module_file(name: str, base_dir: Path) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (base_dir / relative.with_suffix(".py"), base_dir / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _call_factory(reference: str, factory: Callable[..., Any], inputs: tuple[AttributeSpec, ...]) -> Any:
    """Call the factory with ``inputs`` when it takes that parameter, else with nothing;
    any other parameter it requires is refused before the call, by name."""
    try:
        parameters = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        parameters = {}  # a builtin or C callable: called without arguments
    required = [
        p
        for p in parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    others = [p.name for p in required if p.name != "inputs"]
    if others:
        fix = ""
        if "inputs" in parameters:  # inputs is right, the rest cannot be given: Verdict knows no values for them
            fix = f": give {', '.join(others)} a default, or set {'it' if len(others) == 1 else 'them'} inside the factory"
        raise ModelError(
            f"factory {reference} must take no arguments or one named 'inputs' (the attribute specs), "
            f"it takes {', '.join(p.name for p in required)}{fix}"
        )
    positional: tuple[Any, ...] = ()
    keywords: dict[str, Any] = {}
    if "inputs" in parameters:
        if parameters["inputs"].kind == inspect.Parameter.POSITIONAL_ONLY:
            positional = (inputs,)
        else:
            keywords = {"inputs": inputs}
    try:
        return factory(*positional, **keywords)
    except Exception as exc:
        raise ModelError(f"factory {reference} raised {type(exc).__name__}: {exc}") from exc


def load_factory(reference: str, base_dir: Path, inputs: tuple[AttributeSpec, ...]) -> LoadedModule:
    """Import ``module:function`` (a file beside the spec, or an importable module),
    call it (with ``inputs=`` when it takes that parameter) and check it returned
    an ``nn.Module``."""
    module_name, _, function = reference.partition(":")
    base_dir = base_dir.resolve()
    before = set(sys.modules)
    shadowed = sys.modules.get(module_name)  # a module of the same name imported earlier, restored after
    file = _module_file(module_name, base_dir)
    sys.path.insert(0, str(base_dir))
    try:
        try:
            if file is not None:
                spec = importlib.util.spec_from_file_location(module_name, file)
                assert spec is not None and spec.loader is not None
                loaded = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = loaded
                spec.loader.exec_module(loaded)
            else:
                loaded = importlib.import_module(module_name)
        except Exception as exc:
            where = file.name if file is not None else f"module {module_name!r} (no {module_name}.py beside the spec)"
            raise ModelError(f"factory {reference}: cannot import {where}: {type(exc).__name__}: {exc}") from exc
        factory = getattr(loaded, function, None)
        if not callable(factory):
            raise ModelError(f"factory {reference}: module {module_name} has no function {function!r}")
        module = _call_factory(reference, factory, inputs)
    finally:
        sys.path.remove(str(base_dir))
        sources = _sources_under(base_dir, before)
        for name in [n for n in sys.modules if n not in before and _is_under(sys.modules[n], base_dir)]:
            del sys.modules[name]
        if file is not None:
            sources[file.relative_to(base_dir).as_posix()] = file
            if shadowed is not None:
                sys.modules[module_name] = shadowed
            else:
                sys.modules.pop(module_name, None)
    if not isinstance(module, nn.Module):
        raise ModelError(f"factory {reference} returned {type(module).__name__}, not a torch.nn.Module")
    if file is None:  # an importable module: hash the file it came from
        sources.update(module_sources(module, fallback=sys.modules.get(module_name)))
    return LoadedModule(module, sources)


def _is_under(module: Any, base_dir: Path) -> bool:
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and Path(file).resolve().is_relative_to(base_dir)


def _sources_under(base_dir: Path, before: set[str]) -> dict[str, Path]:
    found = {}
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        file = getattr(module, "__file__", None)
        if file and _is_under(module, base_dir):
            path = Path(file).resolve()
            found[path.relative_to(base_dir).as_posix()] = path
    return found


def _dotted_file(name: str, path: Path) -> str:
    """``pkg.model`` -> ``pkg/model.py``: a file named as its module, not by where it lives."""
    if name == "__main__":
        return path.name
    relative = Path(*name.split("."))
    return (relative / "__init__.py" if path.name == "__init__.py" else relative.with_suffix(".py")).as_posix()


def _defining_file(cls: type) -> Path | None:
    """The file the class's own methods were compiled from (None for a class typed into
    a REPL, a notebook cell or ``exec``: its module's ``__file__`` would name another file)."""
    for value in vars(cls).values():
        code = getattr(value, "__code__", None)
        if code is not None and Path(code.co_filename).is_file():
            return Path(code.co_filename).resolve()
    return None


def module_sources(module: nn.Module, fallback: Any = None) -> dict[str, Path]:
    """The source file of a module's class (and of ``fallback``, the factory's Python
    module), named by its dotted module path (``claims/model.py``); none for a class
    defined in a REPL, a notebook cell or ``exec``."""
    found: dict[str, Path] = {}
    cls = type(module)
    defined_in = _defining_file(cls)
    if defined_in is not None:
        found[_dotted_file(cls.__module__, defined_in)] = defined_in
    file, name = getattr(fallback, "__file__", None), getattr(fallback, "__name__", None)
    if file and name and Path(file).is_file():
        found[_dotted_file(name, Path(file))] = Path(file).resolve()
    return found


def load_weights(module: nn.Module, path: Path, *, factory: str | None = None, inputs: int | None = None) -> None:
    """Load a ``state_dict`` file into the factory's module, strictly (every key, every shape).
    ``factory`` and ``inputs`` (the reference and the schema's attribute count) name the
    module in the refusal of weights that do not fit it."""
    if not path.is_file():
        raise ModelError(f"model.weights: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises pickle, zip and runtime errors alike
        raise ModelError(
            f"model.weights {path.name}: cannot be read with torch.load(weights_only=True) "
            f"(save model.state_dict(), not the model object): {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.weights {path.name}: not a state_dict (a dict of tensors), got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = _misfit(path.name, module, state, factory, inputs)
        raise ModelError(f"{summary}\n{str(exc).strip()}") from None


def _names(keys: Sequence[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _misfit(
    name: str, built: nn.Module, given: Mapping[str, torch.Tensor], factory: str | None, inputs: int | None
) -> str:
    """One line before torch's own list: the first difference between the file and the
    module (a learnt weight before a buffer: the layer whose width changed says most),
    and the likely cause (other inputs than in training, or another module)."""
    expected = built.state_dict()
    learnt = {key for key, _ in built.named_parameters()}
    module = f"the module built by {factory}" if factory else "the module"
    if inputs is not None:
        module += f" for {inputs} input{'' if inputs == 1 else 's'}"
    shapes = sorted(
        (
            (key, list(tensor.shape), list(expected[key].shape))
            for key, tensor in given.items()
            if key in expected and tuple(tensor.shape) != tuple(expected[key].shape)
        ),
        key=lambda found: found[0] not in learnt,  # stable: file order within each kind
    )
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    found = []
    if shapes:
        key, in_file, in_module = shapes[0]
        more = f" (and {len(shapes) - 1} more shape(s) differ)" if len(shapes) > 1 else ""
        found.append(f"{key} is {in_file} in the file, {in_module} in the module{more}")
    if missing:
        found.append(f"the file lacks {_names(missing)}")
    if unexpected:
        found.append(f"the file has {_names(unexpected)}, which the module does not")
    if shapes:
        cause = "were the weights trained on other inputs?"
    else:
        cause = "were the weights saved from another module (other layer names, or a wrapper's 'module.' prefix)?"
    detail = f": {'; '.join(found)}; {cause}" if found else ""
    return f"model.weights {name} does not fit {module}{detail}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _shape(shape: Sequence[int], batch: int) -> str:
    return "[" + ", ".join("B" if i == 0 and n == batch else str(n) for i, n in enumerate(shape)) + "]"


def check_output(output: Any, batch: int, what: str = "the model") -> None:
    """One float32 value per row: a tensor of shape ``[B]``."""
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"{what} must return one tensor of shape [B], got {type(output).__name__}")
    shape = tuple(output.shape)
    if shape != (batch,):
        fix = ": squeeze the last dimension (.squeeze(-1))" if shape == (batch, 1) else " (B = the batch size)"
        raise ModelError(
            f"{what} must return one float32 value per row: return shape [B], got {_shape(shape, batch)}{fix}"
        )
    if output.dtype != torch.float32:
        raise ModelError(
            f"{what} returns {str(output.dtype).removeprefix('torch.')}, not float32: the runtime serves float32 "
            f"(keep parameters, buffers and the output float32)"
        )


def run_eager(module: nn.Module, x: np.ndarray) -> torch.Tensor:
    """The eager module on an encoded matrix (no autograd), its failures as ModelError."""
    try:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    except Exception as exc:
        raise ModelError(
            f"the model's forward pass failed on {len(x)} encoded rows ([B, {x.shape[1]}] float32, schema order, "
            f"categories as indexes): {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


_DATA_DEPENDENT = (
    "no Python control flow on tensor values (if/while on a tensor, .item(), .tolist(), "
    "data-dependent shapes): use torch.where and masks"
)
_DYNAMIC_BATCH = "the batch dimension must stay dynamic (no fixed batch size in reshape/view/expand, no loop over rows)"
_TRACEABLE = "the forward pass must be traceable by torch.export"


def _export_failure(exc: BaseException) -> ModelError:
    text = str(exc)
    if "data-dependent" in text or "GuardOnDataDependent" in type(exc).__name__:
        rule = _DATA_DEPENDENT
    elif "Constraints violated" in text or "specialized it to be a constant" in text:
        rule = _DYNAMIC_BATCH
    else:
        rule = _TRACEABLE
    summary = _first_line(exc)
    lines = text.splitlines()
    if "The following call raised this error:" in lines:
        at = lines.index("The following call raised this error:")
        summary += " at " + " / ".join(line.strip() for line in lines[at + 1 : at + 3] if line.strip())
    return ModelError(f"cannot export the model with torch.export (rule: {rule}): {type(exc).__name__}: {summary}")


def export_program(module: nn.Module, example: np.ndarray) -> bytes:
    """``torch.export`` the module with a dynamic batch dimension; the saved bytes.

    ``example``: encoded rows (at least two: a batch of one would let torch
    specialise the batch size). Node stack traces are dropped, as in
    gateway/training.py: they hold absolute file paths, and the artifact's
    sha256 must not depend on where the code lives."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    try:
        with quiet_torch(stderr=True):  # torch prints its partial graph and warnings before raising
            program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise _export_failure(exc) from exc
    for node in program.graph_module.graph.nodes:
        node.meta.pop("stack_trace", None)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def load_artifact(path: Path, *, attributes: int, buckets: Sequence[int]) -> tuple[bytes, torch.export.ExportedProgram]:
    """An already exported program: its bytes and the loaded program.

    The file is screened first by the validator's own reader
    (gateway.validation.artifact: read as a zip and JSON, so nothing pickled is ever
    loaded) and refused with its message; then the loaded graph must pass the
    validator's graph checks for ``attributes`` columns at ``buckets`` rows (a
    static batch, a ``[B, 1]`` output, float64, random ops...) before it is run."""
    if not path.is_file():
        raise ModelError(f"model.artifact: {path} does not exist")
    data = path.read_bytes()
    program, screened = inspect_artifact(data)
    if program is None:
        raise ModelError(f"model.artifact {path.name}: {screened.detail} [{screened.rule}]")
    failed = [c for c in contract_checks(program, attributes=attributes, buckets=buckets) if not c.passed]
    if failed:
        broken = "; ".join(f"{c.name}: {c.detail} [{c.rule}]" for c in failed)
        raise ModelError(f"model.artifact {path.name} breaks the model contract: {broken}")
    return data, program


def outputs_at_bucket(forward: Callable[[torch.Tensor], Any], x: np.ndarray, bucket: int) -> np.ndarray:
    """float32 outputs for an encoded matrix, every call at exactly ``bucket`` rows
    (the runtime's own execution, gateway.runtime.run_at_bucket), so that the eager
    outputs recorded for validation come from the shapes the runtime runs; each
    call's output is checked against the model contract first."""

    def checked(chunk: torch.Tensor) -> Any:
        result = forward(chunk)
        check_output(result, bucket)
        return result

    return run_at_bucket(checked, x, bucket)
