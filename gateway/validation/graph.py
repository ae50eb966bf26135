"""The exported graph against the model contract, read from the graph itself.

Why from the graph: the runtime (gateway.runtime) calls the graph's forward
directly at fixed bucket shapes with the shape guards off, so whatever the
graph does is what every decision does. A contract the graph breaks cannot be
caught later: a static batch dimension silently computes garbage at another
bucket, a ``[batch, 1]`` output breaks scoring, a float64 step or a random op
changes bits between calls. Each rule below is read from
``program.graph_signature`` and the nodes' ``meta["val"]`` (fake tensors with
symbolic shapes), in every sub-graph, and each refusal names the node, op,
parameter or shape and the fix.

The op lists are deliberately short and documented: an op is listed because
it draws random numbers, branches on data, or (NONDETERMINISTIC_OPS) has no
deterministic implementation on a device Verdict serves on, so deterministic
mode would either throw or not hold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

from verdict.gateway.manifest import Manifest
from verdict.gateway.validation.report import Check, measure

__all__ = [
    "CONTROL_FLOW_OPS",
    "DATA_DEPENDENT_OPS",
    "NONDETERMINISTIC_OPS",
    "RANDOM_OPS",
    "contract_checks",
    "graph_checks",
]

DYNAMIC_HINT = "export with a dynamic batch dimension (torch.export.Dim('batch', min=1, max=65536) on dimension 0)"
RANDOM_OPS = frozenset(
    {
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "bernoulli",
        "normal",
        "uniform",
        "multinomial",
        "poisson",
        "binomial",
        "exponential",
        "geometric",
        "cauchy",
        "log_normal",
        "random",
        "rrelu",
        "rrelu_with_noise",
        "dropout",
        "native_dropout",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "_fused_dropout",
        "_standard_gamma",
        "_sample_dirichlet",
    }
)
"""Ops that draw random numbers (in-place ``_`` forms included): a score would change between calls."""
TRAINING_FLAG = {
    "dropout": 2,
    "native_dropout": 2,
    "feature_dropout": 2,
    "alpha_dropout": 2,
    "feature_alpha_dropout": 2,
    "rrelu": 3,
    "rrelu_with_noise": 4,
}
"""Random ops that are the identity unless their ``train``/``training`` argument (this position) is true:
an eval-mode ``nn.Dropout`` exports as ``aten.dropout(x, p, False)`` and is allowed."""
CONTROL_FLOW_OPS = frozenset({"cond", "while_loop", "map_impl", "map", "scan", "associative_scan"})
"""Higher-order ops that branch or loop on tensor values."""
DATA_DEPENDENT_OPS = frozenset(
    {"_local_scalar_dense", "item", "nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim"}
)
"""Ops whose result shape or Python value depends on the data (``.item()``, ``nonzero``...):
the graph then branches on data, and rows of one batch can change each other's path."""
NONDETERMINISTIC_OPS = {
    "histc": "has no deterministic CUDA kernel (throws under torch.use_deterministic_algorithms)",
    "bincount": "has no deterministic CUDA kernel with weights",
    "median": "with indices has no deterministic CUDA kernel",
    "nanmedian": "with indices has no deterministic CUDA kernel",
    "kthvalue": "has no deterministic CUDA kernel",
    "cumsum": "of floating values has no deterministic CUDA kernel",
    "put": "has no deterministic kernel without accumulate",
    "scatter_reduce": "with reduce='prod' has no deterministic CUDA kernel",
    "max_unpool2d": "has no deterministic kernel",
    "max_unpool3d": "has no deterministic kernel",
    "nll_loss_forward": "has no deterministic CUDA kernel",
    "nll_loss2d_forward": "has no deterministic CUDA kernel",
    "resize": "leaves new elements uninitialised",
    "empty": "reads uninitialised memory unless every element is overwritten (use torch.zeros)",
    "empty_like": "reads uninitialised memory unless every element is overwritten (use torch.zeros_like)",
    "empty_strided": "reads uninitialised memory unless every element is overwritten",
    "new_empty": "reads uninitialised memory unless every element is overwritten",
    "new_empty_strided": "reads uninitialised memory unless every element is overwritten",
}
"""Ops torch documents as nondeterministic (or throwing) under ``use_deterministic_algorithms``
on a device Verdict serves on (CPU, or CUDA when present), and allocations whose bits are
whatever memory held (deterministic mode here does not fill them: gateway.determinism)."""
_SHOWN = 5


def graph_checks(program: ExportedProgram, manifest: Manifest | None) -> list[Check]:
    """The graph_* checks; those needing the manifest (shapes, buckets) are
    failed-dependency when it could not be read."""
    if manifest is None:
        reason = "not run: needs the manifest (attribute count, buckets), which did not decode (see files)"
        shapes = [Check(name, False, reason, status="failed-dependency") for name in ("graph_input", "graph_output")]
        return [*shapes, *_body_checks(program)]
    buckets = (manifest.runtime.score_bucket, manifest.runtime.explain_bucket)
    return contract_checks(program, attributes=len(manifest.inputs), buckets=buckets)


def contract_checks(program: ExportedProgram, *, attributes: int, buckets: Sequence[int]) -> list[Check]:
    """The graph_* checks against the contract itself, before any manifest exists:
    ``attributes`` columns per row, run at ``buckets`` rows. The packager runs them on
    a pre-exported program before executing it; :func:`graph_checks` for a manifest."""
    return [_input_check(program, attributes, sorted(set(buckets))), _output_check(program), *_body_checks(program)]


def _body_checks(program: ExportedProgram) -> list[Check]:
    nodes = list(_all_nodes(program))
    return [
        _state_check(program, nodes),
        _dtype_check(program, nodes),
        _random_check(nodes),
        _control_flow_check(nodes),
        _nondeterministic_check(nodes),
    ]


def _all_nodes(program: ExportedProgram) -> Iterator[tuple[str, torch.fx.Node]]:
    """(graph path, node) of the program's graph and every sub-graph (cond branches, loop bodies)."""
    for path, module in program.graph_module.named_modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                yield path or "forward", node


def _node(program: ExportedProgram, name: str) -> torch.fx.Node:
    return next(node for node in program.graph_module.graph.nodes if node.name == name)


def _shape(value: Any) -> str:
    return "[" + ", ".join("batch" if not isinstance(dim, int) else str(dim) for dim in value.shape) + "]"


def _input_check(program: ExportedProgram, d: int, buckets: list[int]) -> Check:
    user = [spec for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    fail = lambda rule, detail, **m: Check("graph_input", False, detail, rule=rule, measured=m)  # noqa: E731
    if len(user) != 1 or not isinstance(user[0].arg, TensorArgument):
        return fail(
            "graph.input.count",
            f"the graph takes {len(user)} inputs ({', '.join(str(s.arg) for s in user) or 'none'}); it must take "
            f"exactly one tensor, [batch, {d}] float32 (the attributes in schema order, categories as their index)",
            inputs=len(user),
        )
    val = _node(program, user[0].arg.name).meta.get("val")
    if not isinstance(val, torch.Tensor):
        return fail("graph.input.tensor", f"the graph input {user[0].arg.name} is not a tensor")
    if val.dtype != torch.float32:
        return fail(
            "graph.input.dtype",
            f"the graph input is {str(val.dtype).removeprefix('torch.')}; the runtime sends float32 rows: export "
            f"with a float32 example and keep the module float32",
            dtype=str(val.dtype),
        )
    if val.dim() != 2:
        return fail(
            "graph.input.shape",
            f"the graph input has shape {_shape(val)}; it must be [batch, {d}] (one row per applicant)",
            dims=val.dim(),
        )
    batch, columns = val.shape
    if not isinstance(columns, int):
        return fail(
            "graph.input.columns",
            f"the graph input's column dimension is dynamic; export it fixed at the manifest's {d} attributes",
        )
    if columns != d:
        return fail(
            "graph.input.columns",
            f"graph takes {columns} inputs per row, manifest has {d} attributes: the graph and the manifest's "
            f"inputs must list the same attributes in the same order",
            columns=columns,
            attributes=d,
        )
    if isinstance(batch, int):
        return fail(
            "graph.input.dynamic_batch",
            f"the batch dimension is static ({batch} row{'' if batch == 1 else 's'}): the runtime runs every "
            f"call at {buckets} rows; " + DYNAMIC_HINT,
            batch=batch,
        )
    lower, upper = _batch_range(program, batch)
    measured = {"columns": columns, "batch": "dynamic", "batch_min": measure(lower), "batch_max": measure(upper)}
    outside = [b for b in buckets if not lower <= b <= upper]
    if outside:
        return Check(
            "graph_input",
            False,
            f"the batch dimension allows {lower:g}..{upper:g} rows, the manifest runs it at {outside} rows: "
            + DYNAMIC_HINT,
            rule="graph.input.batch_range",
            measured=measured,
        )
    return Check(
        "graph_input",
        True,
        f"one float32 input [batch, {d}], batch dynamic ({lower:g}..{upper:g} rows, buckets {buckets} inside)",
        rule="graph.input",
        measured=measured,
    )


def _batch_range(program: ExportedProgram, batch: Any) -> tuple[float, float]:
    """The batch symbol's allowed range from the program's range constraints (inf when unbounded)."""
    expr = batch.node.expr
    found = program.range_constraints.get(expr)
    if found is None:
        return 1.0, float("inf")

    def number(bound: Any) -> float:
        try:
            return float(bound)
        except (TypeError, ValueError):
            return float("inf") if str(bound) in ("oo", "int_oo") else float("-inf")

    return number(found.lower), number(found.upper)


def _output_check(program: ExportedProgram) -> Check:
    user = [spec for spec in program.graph_signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    fail = lambda rule, detail, **m: Check("graph_output", False, detail, rule=rule, measured=m)  # noqa: E731
    if len(user) != 1 or not isinstance(user[0].arg, TensorArgument):
        return fail(
            "graph.output.count",
            f"forward returns {len(user)} values; it must return exactly one tensor, shape [batch] "
            f"(one score per row): return a single tensor, not a tuple or dict",
            outputs=len(user),
        )
    output_node = next(n for n in program.graph_module.graph.nodes if n.op == "output")
    produced = {getattr(a, "name", None): a for a in output_node.args[0]}
    val = produced[user[0].arg.name].meta.get("val")
    inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    in_val = _node(program, inputs[0].arg.name).meta.get("val") if len(inputs) == 1 else None
    if not isinstance(val, torch.Tensor):
        return fail("graph.output.tensor", "forward's output is not a tensor; return one float32 tensor [batch]")
    if val.dtype != torch.float32:
        return fail(
            "graph.output.dtype",
            f"the output is {str(val.dtype).removeprefix('torch.')}; it must be float32 (the scores on the "
            f"record are float32): keep the module float32",
            dtype=str(val.dtype),
        )
    shape = _shape(val)
    if val.dim() == 2 and val.shape[1] == 1:
        return fail(
            "graph.output.shape",
            f"the output has shape {shape}; the runtime needs one value per row, shape [batch]: end forward "
            f"with .squeeze(-1)",
            dims=2,
        )
    batch = in_val.shape[0] if isinstance(in_val, torch.Tensor) and in_val.dim() >= 1 else None
    same_batch = val.dim() == 1 and batch is not None and str(val.shape[0]) == str(batch)
    if not same_batch:
        return fail(
            "graph.output.shape",
            f"the output has shape {shape}; it must be [batch], one value per input row (the input's batch dimension)",
            dims=val.dim(),
        )
    return Check("graph_output", True, "one float32 output [batch]", rule="graph.output", measured={"outputs": 1})


def _view_root(value: Any) -> Any:
    """The node a value is a view of (``calls[0]`` -> ``calls``): follow ops whose
    schema says their result aliases their first argument without writing it."""
    seen = 0
    while isinstance(value, torch.fx.Node) and value.op == "call_function" and seen < 64:
        target = value.target
        returns = target._schema.returns if isinstance(target, torch._ops.OpOverload) else ()
        alias = returns[0].alias_info if returns else None
        if alias is None or alias.is_write or not value.args:
            break
        value, seen = value.args[0], seen + 1
    return value


def _in_place_writes(program: ExportedProgram, nodes: Sequence[tuple[str, torch.fx.Node]]) -> list[str]:
    """In-place writes (``add_``, ``copy_``, ``index_put_``...) into a parameter, buffer,
    constant or the input: the training-IR graph keeps them as ops, not as mutation outputs."""
    owners = {
        spec.arg.name: (str(spec.kind).rsplit(".", 1)[-1].lower().replace("_", " "), spec.target or spec.arg.name)
        for spec in program.graph_signature.input_specs
        if isinstance(spec.arg, TensorArgument)
    }
    found = []
    for _, node, _, shown in _calls(nodes):
        target = node.target
        if not isinstance(target, torch._ops.OpOverload):
            continue
        for i, argument in enumerate(target._schema.arguments):
            if argument.alias_info is None or not argument.alias_info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
            root = _view_root(value)
            if isinstance(root, torch.fx.Node) and root.op == "placeholder" and root.name in owners:
                kind, owner = owners[root.name]
                found.append(f"forward writes {owner} ({kind}) in place (node {node.name}, {shown})")
    return found


def _state_check(program: ExportedProgram, nodes: Sequence[tuple[str, torch.fx.Node]]) -> Check:
    signature = program.graph_signature
    problems = _in_place_writes(program, nodes)
    for spec in signature.output_specs:
        if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION, OutputKind.USER_INPUT_MUTATION):
            what = str(spec.kind).rsplit(".", 1)[-1].lower().replace("_", " ")
            problems.append(f"forward writes {spec.target or spec.arg} ({what})")
        elif spec.kind in (OutputKind.TOKEN, OutputKind.LOSS_OUTPUT) or "GRADIENT" in str(spec.kind):
            problems.append(f"forward has a {str(spec.kind).rsplit('.', 1)[-1].lower()} output")
    for spec in signature.input_specs:
        if spec.kind in (InputKind.CUSTOM_OBJ, InputKind.TOKEN):
            problems.append(f"forward takes a {str(spec.kind).rsplit('.', 1)[-1].lower()} ({spec.target or spec.arg})")
    if problems:
        return Check(
            "graph_state",
            False,
            "; ".join(problems[:_SHOWN]) + ": a score must depend only on its row, not on state kept between "
            "calls or side effects (drop the in-place updates; keep running statistics out of forward)",
            rule="graph.state",
            measured={"problems": len(problems)},
        )
    return Check("graph_state", True, "no state kept between calls, no side effects", rule="graph.state")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _bad_dtype(dtype: Any) -> bool:
    return isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype.is_complex) and dtype != torch.float32


def _vals(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _vals(item)


def _op(node: torch.fx.Node) -> tuple[str, str]:
    """(base name for matching, display name) of a call: ``aten.dropout.default`` -> ``dropout``;
    in-place forms (``bernoulli_``) match their base; higher-order ops by their name."""
    target = node.target
    if isinstance(target, torch._ops.HigherOrderOperator):
        return target.name(), f"higher_order.{target.name()}"
    if isinstance(target, torch._ops.OpOverload):
        base = target.name().split("::", 1)[-1]
        return base.rstrip("_") if not base.startswith("_") else base, str(target)
    name = getattr(target, "__name__", str(target))
    return name, name


def _calls(nodes: Sequence[tuple[str, torch.fx.Node]]) -> Iterator[tuple[str, torch.fx.Node, str, str]]:
    for path, node in nodes:
        if node.op == "call_function":
            base, shown = _op(node)
            yield path, node, base, shown


def _dtype_check(program: ExportedProgram, nodes: Sequence[tuple[str, torch.fx.Node]]) -> Check:
    problems = []
    tensors = {**program.state_dict, **{k: v for k, v in program.constants.items() if isinstance(v, torch.Tensor)}}
    for name, tensor in sorted(tensors.items()):
        if _bad_dtype(tensor.dtype):
            problems.append(f"parameter or buffer {name} is {_dtype_name(tensor.dtype)}")
    for path, node, _, shown in _calls(nodes):
        for val in _vals(node.meta.get("val")):
            if _bad_dtype(val.dtype):
                where = f" in {path}" if path != "forward" else ""
                problems.append(f"node {node.name} ({shown}){where} produces {_dtype_name(val.dtype)}")
                break
    if problems:
        return Check(
            "graph_dtypes",
            False,
            "; ".join(problems[:_SHOWN])
            + (f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else "")
            + ": a float32 model must stay float32 throughout (mixed precision changes bits between devices "
            "and kernels): cast with .float() before export and drop .double()/.half() inside forward",
            rule="graph.dtype.float32_only",
            measured={"problems": len(problems)},
        )
    return Check(
        "graph_dtypes",
        True,
        f"float32 throughout ({len(tensors)} parameters, buffers and constants)",
        rule="graph.dtype.float32_only",
        measured={"tensors": len(tensors)},
    )


def _training_flag(node: torch.fx.Node, base: str) -> bool:
    """True unless a dropout-like op is called with its train/training flag false (then it is the identity)."""
    if base not in TRAINING_FLAG:
        return True
    position = TRAINING_FLAG[base]
    if len(node.args) > position:
        return bool(node.args[position])
    return bool(node.kwargs.get("train", node.kwargs.get("training", True)))


def _found(nodes: Sequence[tuple[str, torch.fx.Node]], names: frozenset[str] | dict[str, str]) -> list[str]:
    out = []
    for path, node, base, shown in _calls(nodes):
        if base in names and _training_flag(node, base):
            out.append(f"{shown} (node {node.name}{'' if path == 'forward' else ' in ' + path})")
    return out


def _random_check(nodes: Sequence[tuple[str, torch.fx.Node]]) -> Check:
    found = _found(nodes, RANDOM_OPS)
    if found:
        return Check(
            "graph_random_ops",
            False,
            f"random op(s) in forward: {', '.join(found[:_SHOWN])}: a score would change from call to call; "
            f"export the module in eval mode (model.eval(): dropout off) and remove random draws from forward",
            rule="graph.random_ops",
            measured={"ops": len(found)},
        )
    return Check("graph_random_ops", True, "no random ops in forward", rule="graph.random_ops")


def _control_flow_check(nodes: Sequence[tuple[str, torch.fx.Node]]) -> Check:
    flow = _found(nodes, CONTROL_FLOW_OPS)
    data = _found(nodes, DATA_DEPENDENT_OPS)
    if flow or data:
        parts = []
        if flow:
            parts.append(f"data-dependent control flow: {', '.join(flow[:_SHOWN])}")
        if data:
            parts.append(f"data-dependent values or shapes: {', '.join(data[:_SHOWN])}")
        return Check(
            "graph_control_flow",
            False,
            "; ".join(parts) + ": a row's path through the graph must not depend on tensor values (the batch's "
            "other rows and the padding would steer it); express branches with torch.where",
            rule="graph.control_flow",
            measured={"control_flow_ops": len(flow), "data_dependent_ops": len(data)},
        )
    return Check("graph_control_flow", True, "no data-dependent control flow", rule="graph.control_flow")


def _nondeterministic_check(nodes: Sequence[tuple[str, torch.fx.Node]]) -> Check:
    found = []
    for path, node, base, shown in _calls(nodes):
        if base not in NONDETERMINISTIC_OPS:
            continue
        if base == "scatter_reduce" and "prod" not in (*map(str, node.args), *map(str, node.kwargs.values())):
            continue
        if base in ("median", "nanmedian") and not isinstance(node.meta.get("val"), (tuple, list)):
            continue  # the overload without indices is deterministic
        where = "" if path == "forward" else f" in {path}"
        found.append(f"{shown} (node {node.name}{where}) {NONDETERMINISTIC_OPS[base]}")
    if found:
        return Check(
            "graph_nondeterministic_ops",
            False,
            "op(s) without a deterministic implementation: " + "; ".join(found[:_SHOWN]),
            rule="graph.nondeterministic_ops",
            measured={"ops": len(found)},
        )
    return Check(
        "graph_nondeterministic_ops",
        True,
        f"no op from the nondeterministic list ({len(NONDETERMINISTIC_OPS)} ops, gateway/validation/graph.py)",
        rule="graph.nondeterministic_ops",
    )
