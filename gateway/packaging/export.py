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
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from verdict.gateway.packaging.errors import ModelError
from verdict.gateway.schema import AttributeSpec

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
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]  # a builtin or C callable: called without arguments
    required = [
        p
        for p in parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if "inputs" in parameters:
        arguments: dict[str, Any] = {"inputs": inputs}
    elif not required:
        arguments = {}
    else:
        raise ModelError(
            f"factory {reference} must take no arguments or one named 'inputs' (the attribute specs), "
            f"it takes {', '.join(p.name for p in required)}"
        )
    try:
        return factory(**arguments)
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


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a ``state_dict`` file into the factory's module, strictly (every key, every shape)."""
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
        raise ModelError(f"model.weights {path.name} does not fit the factory's module: {exc}") from None


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
        program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise _export_failure(exc) from exc
    for node in program.graph_module.graph.nodes:
        node.meta.pop("stack_trace", None)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _looks_like_torchscript(data: bytes) -> bool:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def load_artifact(path: Path) -> tuple[bytes, torch.export.ExportedProgram]:
    """An already exported program: its bytes and the loaded program, or a ModelError
    saying what the file is instead (a pickled state_dict, TorchScript, anything else)."""
    if not path.is_file():
        raise ModelError(f"model.artifact: {path} does not exist")
    data = path.read_bytes()
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - torch.export.load raises zip, pickle and runtime errors alike
        if _looks_like_torchscript(data):
            what = (
                "TorchScript (torch.jit.save), not a torch.export program: export the module with torch.export.export"
            )
        elif _is_state_dict(data):
            what = (
                "a pickled state_dict, not an exported program: export with torch.export.export, or package from "
                "a factory (model.factory + model.weights)"
            )
        else:
            what = f"not a torch.export program (torch.export.load: {type(exc).__name__}: {_first_line(exc)})"
        raise ModelError(f"model.artifact {path.name} is {what}") from None
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelError(f"model.artifact {path.name}: torch.export.load gave {type(program).__name__}")
    return data, program


def _is_state_dict(data: bytes) -> bool:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything torch.load refuses is simply not a state_dict
        return False
    return isinstance(state, dict)


def outputs_at_bucket(forward: Callable[[torch.Tensor], Any], x: np.ndarray, bucket: int) -> np.ndarray:
    """float32 outputs for an encoded matrix, every call at exactly ``bucket`` rows
    (zero padding, as the runtime's ``score_matrix``), so that the eager outputs
    recorded for validation come from the same shapes the runtime runs."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(len(x), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(x), bucket):
            chunk = torch.from_numpy(x[start : start + bucket])
            rows = len(chunk)
            if rows < bucket:
                chunk = torch.cat([chunk, torch.zeros((bucket - rows, x.shape[1]), dtype=torch.float32)])
            result = forward(chunk)
            check_output(result, bucket)
            out[start : start + rows] = result[:rows].numpy()
    return out
