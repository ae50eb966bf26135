"""Environment fingerprint: what a replay must compare before trusting bits.

Why: floating-point results depend on the torch build, the BLAS library, the
CPU's vector units, the GPU and driver, thread counts and determinism flags.
The fingerprint records all of them; its sha256 (over the RFC 8785 canonical
form) goes on every audit record, and replay diffs the stored fingerprint
against its own. Nothing volatile (host name, process id, time) is included,
so two processes on the same machine and install have the same hash.

The CPU flags say what the CPU could do; the instruction-set *paths* say what
the libraries chose to run (they can be narrowed by ATEN_CPU_CAPABILITY,
MKL_ENABLE_INSTRUCTIONS, NPY_DISABLE_CPU_FEATURES, OPENBLAS_CORETYPE), and are
recorded as such: ``torch.cpu_capability``, ``torch.mkl_dispatch``,
``numpy_simd``, ``numpy_blas``, with MKL's CNR mode in ``determinism.mkl_cbwr``.
Each is a field of its own with a default, so a manifest written before they
existed still decodes and a replay diff names each new path separately.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import msgspec
import numpy as np
import torch

from verdict.audit.canonical import canonical_bytes
from verdict.gateway.determinism import DeterminismFlags, current_flags, mkl_dispatch_branch
from verdict.gateway.source import project_version, source_sha256

__all__ = ["EnvironmentFingerprint", "avx2_only_overrides", "capture", "diff", "fingerprint_sha256", "summary"]

KEY_PACKAGES = ("torch", "numpy", "shap", "msgspec", "litestar", "cryptography", "boto3", "uvicorn", "scipy")


class CpuInfo(msgspec.Struct, frozen=True):
    model: str
    flags: tuple[str, ...]
    logical_cores: int


class TorchBuild(msgspec.Struct, frozen=True):
    version: str
    git_version: str
    debug: bool
    cuda: str | None
    cudnn: int | None
    config: str  # torch.__config__.show(): compiler, BLAS, vector ISA
    parallel: str  # torch.__config__.parallel_info(): OpenMP/MKL threading
    cpu_capability: str | None = None  # ATen's vectorised kernels: "AVX512", "AVX2", "DEFAULT"
    mkl_dispatch: str | None = None  # MKL's kernel branch on this CPU ("AVX512_E1", "AVX2"); None: no MKL
    mkldnn: bool | None = None  # oneDNN compiled in and usable


class Accelerator(msgspec.Struct, frozen=True):
    device: str
    name: str | None = None
    capability: str | None = None
    driver_cuda: str | None = None


class EnvironmentFingerprint(msgspec.Struct, frozen=True):
    format: str
    python: str
    implementation: str
    platform: str
    machine: str
    libc: str
    cpu: CpuInfo
    torch: TorchBuild
    accelerator: Accelerator
    key_packages: dict[str, str]
    packages: dict[str, str]
    project_version: str
    project_source_sha256: str
    determinism: DeterminismFlags
    numpy_simd: tuple[str, ...] | None = None  # NumPy's SIMD feature groups in use (baseline + dispatched)
    numpy_blas: tuple[str, ...] | None = None  # NumPy's BLAS: library, version, kernel architecture, threading


def _cpu() -> CpuInfo:
    model = platform.processor() or "unknown"
    flags: tuple[str, ...] = ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("unknown", "", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = tuple(sorted(value.split()))
    except OSError:
        pass

    return CpuInfo(model=model, flags=flags, logical_cores=os.cpu_count() or 0)


def _numpy_dispatch() -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(compiled baseline, dispatch targets in use) of NumPy's SIMD code, derived
    as ``numpy.show_runtime()`` does: a target is in use when the CPU has it and
    NPY_DISABLE_CPU_FEATURES does not remove it. None if NumPy does not say."""
    try:
        # a private C module, without type information: loaded as a plain module
        umath = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:
        return None
    return tuple(umath.__cpu_baseline__), tuple(
        name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name)
    )


def _numpy_simd() -> tuple[str, ...] | None:
    dispatch = _numpy_dispatch()
    return None if dispatch is None else dispatch[0] + dispatch[1]


def _numpy_blas() -> tuple[str, ...] | None:
    """NumPy's BLAS as threadpoolctl finds it: library, version and which of its
    kernel sets runs (OpenBLAS picks one per CPU; OPENBLAS_CORETYPE overrides it).

    Only the copy shipped inside NumPy's wheel (``numpy.libs``): SciPy loads a
    BLAS of its own, so listing every BLAS in the process would make the hash
    depend on what the process happened to import. Paths are left out: they
    differ between checkouts of the same install. Empty for a NumPy linked to
    a system BLAS."""
    try:
        # lazy: optional: without threadpoolctl the fingerprint has no BLAS line
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    home = Path(np.__file__).resolve().parent
    own = {home, home.with_name("numpy.libs")}
    return tuple(
        f"{pool.get('internal_api')} {pool.get('version')} architecture={pool.get('architecture')} "
        f"threading={pool.get('threading_layer')} threads={pool.get('num_threads')}"
        for pool in threadpool_info()
        if pool.get("user_api") == "blas" and Path(pool.get("filepath") or "/").resolve().parent in own
    )


def avx2_only_overrides() -> dict[str, str]:
    """Environment variables that make a fresh process on this machine run the code
    paths an AVX2-only x86-64 CPU (e.g. AMD EPYC Zen 2/3) runs: ATen's AVX2 kernels,
    MKL's AVX2 branch, NumPy without its AVX-512 dispatch targets, OpenBLAS's
    Haswell kernels. Why: to reproduce, on an AVX-512 machine, the bits such a CPU
    computes (tests and benchmarks/scoring.py --isa). MKL_CBWR is left alone, so
    the process still runs in the CNR mode gateway.determinism pins."""
    overrides = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
    in_use = (_numpy_dispatch() or ((), ()))[1]
    beyond_avx2 = [name for name in in_use if "512" in name or name == "X86_V4"]  # numpy 2.4 groups and older names
    return overrides | ({"NPY_DISABLE_CPU_FEATURES": " ".join(beyond_avx2)} if beyond_avx2 else {})


def _installed_packages() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            found[name] = dist.version
    return dict(sorted(found.items()))


def _accelerator(device: str) -> Accelerator:
    if not device.startswith("cuda"):
        return Accelerator(device="cpu")
    props = torch.cuda.get_device_properties(torch.device(device))
    return Accelerator(
        device=device,
        name=props.name,
        capability=f"{props.major}.{props.minor}",
        driver_cuda=str(torch.version.cuda),
    )


def capture(device: str = "cpu", seed: int = 0) -> EnvironmentFingerprint:
    packages = _installed_packages()
    return EnvironmentFingerprint(
        format="verdict.environment/v1",
        python=sys.version.split()[0],
        implementation=platform.python_implementation(),
        platform=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        libc=" ".join(platform.libc_ver()),
        cpu=_cpu(),
        torch=TorchBuild(
            version=str(torch.__version__),
            git_version=torch.version.git_version,
            debug=bool(torch.version.debug),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            config=torch.__config__.show(),
            parallel=torch.__config__.parallel_info(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
            mkl_dispatch=mkl_dispatch_branch(),
            mkldnn=torch.backends.mkldnn.is_available(),
        ),
        accelerator=_accelerator(device),
        key_packages={name: packages.get(name, "absent") for name in KEY_PACKAGES},
        packages=packages,
        project_version=project_version(),
        project_source_sha256=source_sha256(),
        determinism=current_flags(seed),
        numpy_simd=_numpy_simd(),
        numpy_blas=_numpy_blas(),
    )


def encode(fingerprint: EnvironmentFingerprint) -> bytes:
    return canonical_bytes(fingerprint)


def summary(fingerprint: EnvironmentFingerprint) -> dict[str, str]:
    """The few fields a manifest's provenance quotes in words (the full fingerprint is
    pinned by its sha256): Python, torch, platform, machine, CPU model."""
    return {
        "python": fingerprint.python,
        "torch": fingerprint.torch.version,
        "platform": fingerprint.platform,
        "machine": fingerprint.machine,
        "cpu": fingerprint.cpu.model,
    }


def fingerprint_sha256(fingerprint: EnvironmentFingerprint) -> str:
    return hashlib.sha256(encode(fingerprint)).hexdigest()


def diff(recorded: EnvironmentFingerprint, current: EnvironmentFingerprint) -> list[tuple[str, object, object]]:
    """Differences as (dotted path, recorded, current), for replay reports."""
    out: list[tuple[str, object, object]] = []
    _diff(msgspec.to_builtins(recorded), msgspec.to_builtins(current), "", out)
    return out


def _diff(a: object, b: object, path: str, out: list[tuple[str, object, object]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key, out)
    elif a != b:
        out.append((path, a, b))
