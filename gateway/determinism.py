"""Deterministic execution mode for torch.

Why a module of its own: these switches only work if they are set before the
first CUDA call (cuBLAS reads its workspace setting when the context is
created) or, for Intel MKL, before the first matrix product, and every one of
them must be recorded so a replay can prove it ran under the same rules. Call
:func:`enable` once at process start, before any model is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from pathlib import Path

import msgspec
import torch

__all__ = [
    "MKL_CNR_DEFAULT",
    "DeterminismError",
    "DeterminismFlags",
    "current_flags",
    "enable",
    "mkl_cnr",
    "mkl_dispatch_branch",
    "select_device",
]

CUBLAS_WORKSPACE = ":4096:8"

# Intel MKL's Conditional Numerical Reproducibility (CNR) mode for this process
# unless the operator sets MKL_CBWR (see _pin_mkl_cnr for why).
MKL_CNR_DEFAULT = "COMPATIBLE"

# mkl_cbwr.h: branch numbers, the STRICT flag and the "whole setting" query.
_MKL_BRANCHES = {
    1: "OFF",
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    11: "AVX512_MIC",
    12: "AVX512",
    13: "AVX512_MIC_E1",
    14: "AVX512_E1",
}
_MKL_CBWR_STRICT = 0x10000
_MKL_CBWR_ALL = -1


class DeterminismError(RuntimeError):
    """Deterministic mode could not be guaranteed; nothing may be scored."""


class DeterminismFlags(msgspec.Struct, frozen=True):
    use_deterministic_algorithms: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    matmul_allow_tf32: bool
    cudnn_allow_tf32: bool
    float32_matmul_precision: str
    cublas_workspace_config: str | None
    fill_uninitialized_memory: bool
    intra_op_threads: int
    inter_op_threads: int
    seed: int
    # MKL's CNR mode as MKL reports it ("COMPATIBLE", "AUTO,STRICT", "OFF"); None: no
    # MKL in this torch build, MKL cannot be asked, or a manifest from before it was recorded.
    mkl_cbwr: str | None = None


def enable(threads: int, seed: int = 0) -> DeterminismFlags:
    """Switch this process to deterministic execution and return the flags in force."""
    if torch.cuda.is_initialized() and os.environ.get("CUBLAS_WORKSPACE_CONFIG") != CUBLAS_WORKSPACE:
        raise DeterminismError(
            "CUDA was initialised before deterministic mode; cuBLAS cannot be made deterministic "
            "any more in this process (enable deterministic mode before loading any model)"
        )
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also NaN-fills every new tensor, a debugging net
    # against reading uninitialised memory. It costs ~10% on small models
    # and adds nothing when every op writes its whole output, which the
    # bit-for-bit invariance tests check; so it is off, and recorded.
    # a property of the module's own class, invisible to type checkers
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work; recorded as found
        torch.set_num_interop_threads(1)
    torch.manual_seed(seed)
    _check_mkl_cnr()
    flags = current_flags(seed)
    if flags.intra_op_threads != threads:
        raise DeterminismError(f"asked for {threads} threads, torch runs {flags.intra_op_threads}")
    return flags


def current_flags(seed: int = 0) -> DeterminismFlags:
    return DeterminismFlags(
        use_deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
        cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        # a property of the module's own class, invisible to type checkers
        fill_uninitialized_memory=bool(torch.utils.deterministic.fill_uninitialized_memory),  # type: ignore[attr-defined]
        intra_op_threads=torch.get_num_threads(),
        inter_op_threads=torch.get_num_interop_threads(),
        seed=seed,
        mkl_cbwr=mkl_cnr(),
    )


# -- Intel MKL ------------------------------------------------------------------------


@functools.cache
def _mkl_service() -> ctypes.CDLL | None:
    """torch's copy of MKL, for its CNR calls; None where this torch has no MKL
    or does not export them.

    torch links MKL statically into libtorch_cpu and exports MKL's service
    layer as ``mkl_serv_*`` (the public ``mkl_cbwr_*`` names are not exported)."""
    if not torch.backends.mkl.is_available():
        return None
    for library in sorted((Path(torch.__file__).parent / "lib").glob("*torch_cpu.*")):
        try:
            service = ctypes.CDLL(str(library))
            functions = [getattr(service, f"mkl_serv_cbwr_{name}") for name in ("get", "set", "get_auto_branch")]
        except (OSError, AttributeError):
            continue
        for function in functions:
            function.restype = ctypes.c_int
        service.mkl_serv_cbwr_get.argtypes = service.mkl_serv_cbwr_set.argtypes = [ctypes.c_int]
        return service
    return None


def _mkl_setting_name(setting: int) -> str:
    """MKL's setting number -> "COMPATIBLE", "AUTO,STRICT", ..."""
    branch = _MKL_BRANCHES.get(setting & 0xFFFF, f"branch {setting & 0xFFFF}")
    return branch + (",STRICT" if setting & _MKL_CBWR_STRICT else "")


def _mkl_setting_code(name: str) -> int:
    """The inverse of _mkl_setting_name for known branches."""
    branch, _, strict = name.partition(",")
    code = next(number for number, known in _MKL_BRANCHES.items() if known == branch)
    return code | (_MKL_CBWR_STRICT if strict == "STRICT" else 0)


def mkl_cnr() -> str | None:
    """MKL's CNR mode in force ("COMPATIBLE", "AUTO,STRICT", "OFF"), None without MKL.

    Why ask MKL rather than trust the setting: MKL fixes its mode at its first
    call; a process that multiplied before runs whatever mode it started in."""
    service = _mkl_service()
    return None if service is None else _mkl_setting_name(service.mkl_serv_cbwr_get(_MKL_CBWR_ALL))


def mkl_dispatch_branch() -> str | None:
    """The instruction-set branch MKL's own dispatch picks on this CPU ("AVX512_E1",
    "AVX2", ...) whatever the CNR mode; None without MKL. Goes on the environment
    manifest: two machines with different branches and CNR off compute other bits."""
    service = _mkl_service()
    return None if service is None else _mkl_setting_name(service.mkl_serv_cbwr_get_auto_branch())


def _requested_mkl_cnr() -> str:
    """The mode this process must run, as mkl_cnr() names it: the operator's MKL_CBWR
    ("BRANCH=AVX2,STRICT" -> "AVX2,STRICT", "" -> "OFF"), else MKL_CNR_DEFAULT."""
    value = os.environ.get("MKL_CBWR")
    if value is None:
        return MKL_CNR_DEFAULT
    parts = [part.strip() for part in value.upper().replace("BRANCH=", "").split(",")]
    return ",".join(part for part in parts if part) or "OFF"


def _pin_mkl_cnr() -> None:
    """Put MKL in CNR mode MKL_CNR_DEFAULT, unless the operator set MKL_CBWR.

    Why: torch's x86 wheels compute every linear layer with MKL's sgemm, whose
    kernels MKL picks by instruction set. Its AVX2 kernels (an AVX2-only CPU
    such as an AMD EPYC Zen 2/3 runs them; MKL_ENABLE_INSTRUCTIONS=AVX2 does on
    an AVX-512 machine) give rows 4014, 4015, 4094 and 4095 of a 4096-row
    product another summation order than the rest, so a row's bits depended on
    where it sat in the explain bucket: explanations were not batch invariant
    and skipping repeated rows changed bits there (issue 14, item 8). The
    COMPATIBLE branch runs one SSE2 code path on every x86-64 CPU, Intel or
    not (with AUTO, the only branch MKL supports on non-Intel CPUs): measured
    position-invariant and giving the AVX-512 machine's bits on the AVX2 path
    too, at a cost measured by benchmarks/scoring.py --isa (docs/replay.md).

    Why at import and by call, not in enable(): MKL fixes its mode at its first
    call, so this runs before anything can multiply; a call rather than
    setting MKL_CBWR in os.environ, so that child processes (a replay in a
    rebuilt environment of an older version) run the mode of their own code.
    If MKL already ran, the call fails and enable() refuses to score."""
    if "MKL_CBWR" in os.environ:
        return  # MKL reads it itself; enable() checks it took effect
    service = _mkl_service()
    if service is not None:
        service.mkl_serv_cbwr_set(_mkl_setting_code(MKL_CNR_DEFAULT))
    elif torch.backends.mkl.is_available():
        os.environ["MKL_CBWR"] = MKL_CNR_DEFAULT  # MKL without exported CNR calls: the documented variable


def _check_mkl_cnr() -> None:
    running = mkl_cnr()
    if running is not None and running != _requested_mkl_cnr():
        source = f"MKL_CBWR={os.environ['MKL_CBWR']!r}" if "MKL_CBWR" in os.environ else "the gateway's default"
        raise DeterminismError(
            f"MKL runs CNR mode {running}, {source} asks for {_requested_mkl_cnr()}: MKL was used before "
            f"gateway.determinism was imported, or does not support that mode on this CPU (set MKL_CBWR before "
            f"the process starts; the empty string runs MKL without CNR)"
        )


_pin_mkl_cnr()


def select_device(policy: str | None = None) -> torch.device:
    """``VERDICT_DEVICE``: ``cpu``, ``cuda`` (fail if absent) or ``auto`` (default)."""
    policy = (policy or os.environ.get("VERDICT_DEVICE") or "auto").lower()
    if policy == "cpu":
        return torch.device("cpu")
    if policy in ("cuda", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if policy == "cuda":
            raise DeterminismError("VERDICT_DEVICE=cuda but no CUDA device is available")
        return torch.device("cpu")
    raise DeterminismError(f"VERDICT_DEVICE={policy!r}: use cpu, cuda or auto")
