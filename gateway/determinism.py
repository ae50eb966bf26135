"""Deterministic execution mode for torch.

Why a module of its own: these switches only work if they are set before the
first CUDA call (cuBLAS reads its workspace setting when the context is
created), and every one of them must be recorded so a replay can prove it ran
under the same rules. Call :func:`enable` once at process start, before any
model is loaded.
"""

from __future__ import annotations

import os

import msgspec
import torch

__all__ = ["DeterminismFlags", "DeterminismError", "current_flags", "enable", "select_device"]

CUBLAS_WORKSPACE = ":4096:8"


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
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # only settable before the first parallel work; recorded as found
    torch.manual_seed(seed)
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
        fill_uninitialized_memory=bool(torch.utils.deterministic.fill_uninitialized_memory),
        intra_op_threads=torch.get_num_threads(),
        inter_op_threads=torch.get_num_interop_threads(),
        seed=seed,
    )


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
