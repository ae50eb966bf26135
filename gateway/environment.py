"""Environment fingerprint: what a replay must compare before trusting bits.

Why: floating-point results depend on the torch build, the BLAS library, the
CPU's vector units, the GPU and driver, thread counts and determinism flags.
The fingerprint records all of them; its sha256 (over the RFC 8785 canonical
form) goes on every audit record, and replay diffs the stored fingerprint
against its own. Nothing volatile (host name, process id, time) is included,
so two processes on the same machine and install have the same hash.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata

import msgspec
import torch

from audit.canonical import canonical_bytes
from gateway.determinism import DeterminismFlags, current_flags
from gateway.source import project_version, source_sha256

__all__ = ["EnvironmentFingerprint", "capture", "diff", "fingerprint_sha256"]

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
    config: str          # torch.__config__.show(): compiler, BLAS, vector ISA
    parallel: str        # torch.__config__.parallel_info(): OpenMP/MKL threading


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


def _cpu() -> CpuInfo:
    model, flags = platform.processor() or "unknown", ()
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
        ),
        accelerator=_accelerator(device),
        key_packages={name: packages.get(name, "absent") for name in KEY_PACKAGES},
        packages=packages,
        project_version=project_version(),
        project_source_sha256=source_sha256(),
        determinism=current_flags(seed),
    )


def encode(fingerprint: EnvironmentFingerprint) -> bytes:
    return canonical_bytes(fingerprint)


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
