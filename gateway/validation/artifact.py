"""Is ``model.pt2`` a torch.export program, and can it be opened without running pickled code?

Why look inside before loading: ``torch.export.load`` itself unpickles in
several places (weights or constants saved with ``use_pickle``, custom and
opaque objects, sample inputs when the safe loader refuses them, archives in
the pre-2.8 layout), and a pickle can run any code. Registration is the gate
for files from outside the bank's build, so the archive's layout and configs
are read as a zip and JSON first: anything that would make torch unpickle is
refused unopened, and the common wrong files (random bytes, a pickled
``state_dict``, TorchScript) are named with the fix. Tensors are only ever
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import msgspec
import torch
from torch.export import ExportedProgram

from verdict.gateway.validation.quiet import quiet_torch
from verdict.gateway.validation.report import Check

__all__ = ["EXPORT_HINT", "inspect_artifact"]

NAME = "artifact_format"
EXPORT_HINT = (
    "export the module with torch.export.export(model, (example,), dynamic_shapes={...: {0: torch.export.Dim('batch')}}) "
    "and save it with torch.export.save, or let `verdict models package` do it from a factory"
)
_PICKLE_PROTOCOLS = range(2, 6)
# pt2 archive layout (torch.export.pt2_archive.constants), relative to the archive's root folder
_FORMAT_FILE = "archive_format"
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_LEGACY_PICKLES = ("data/weights/model.pt", "data/constants/model.pt")
_TENSOR_CONSTANT = "tensor_"


class _Refused(Exception):
    """Internal: the archive is not what it must be; carries the rule and the sentence."""

    def __init__(self, rule: str, detail: str, **measured: Any) -> None:
        super().__init__(detail)
        self.rule, self.detail, self.measured = rule, detail, measured


def inspect_artifact(data: bytes) -> tuple[ExportedProgram | None, Check]:
    """The loaded program (None when refused) and the ``artifact_format`` check."""
    try:
        entries = _entries(data)
        program = _load_program(data, entries)
    except _Refused as refused:
        measured = {"bytes": len(data), **refused.measured}
        return None, Check(NAME, False, refused.detail, rule=refused.rule, measured=measured)
    detail = f"a torch.export program ({len(entries)} archive entries), opened without unpickling"
    return program, Check(
        NAME, True, detail, rule="artifact.torch_export", measured={"bytes": len(data), "entries": len(entries)}
    )


def _entries(data: bytes) -> dict[str, str]:
    """Archive entries by their path below the root folder (``archive/models/model.json`` ->
    ``models/model.json``); refuses anything that is not a zip archive, naming what it is."""
    if not data:
        raise _Refused("artifact.empty", "model.pt2 is empty: " + EXPORT_HINT)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        head = data[:8].hex(" ")
        if data[0] == 0x80 and data[1] in _PICKLE_PROTOCOLS:
            raise _Refused(
                "artifact.pickle",
                f"a bare pickle (protocol {data[1]}: torch.save with the legacy format, or pickle.dump), "
                f"not an exported program; refused unopened, a pickle can run code: {EXPORT_HINT}",
                first_bytes=head,
            )
        raise _Refused(
            "artifact.zip",
            f"not a zip archive (first bytes {head}): random or truncated bytes, not a torch.export program; "
            + EXPORT_HINT,
            first_bytes=head,
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _Refused("artifact.zip", f"a damaged zip archive ({exc}): " + EXPORT_HINT) from None
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) == 1 and all("/" in name for name in names):
        root = roots.pop() + "/"
        return {name[len(root) :]: name for name in names}
    return {name: name for name in names}


def _load_program(data: bytes, entries: dict[str, str]) -> ExportedProgram:
    if _FORMAT_FILE not in entries:
        raise _classify_other_zip(data, entries)
    archive = zipfile.ZipFile(io.BytesIO(data))
    read = lambda inner: archive.read(entries[inner])  # noqa: E731 - a one-line reader over this archive
    if read(_FORMAT_FILE).strip() != b"pt2":
        raise _Refused("artifact.format", f"archive_format says {read(_FORMAT_FILE)[:40]!r}, not 'pt2'")
    models = sorted(name for name in entries if name.startswith("models/") and name.endswith(".json"))
    if models != ["models/model.json"]:
        raise _Refused(
            "artifact.programs",
            f"the archive holds programs {models or 'none'}; exactly one, saved by torch.export.save "
            f"(models/model.json), is served",
        )
    for legacy in _LEGACY_PICKLES:
        if legacy in entries:
            raise _Refused(
                "artifact.pickled_weights",
                f"the archive keeps its tensors as one pickle ({legacy}, an old torch.export.save layout); "
                f"refused unopened: re-save the program with this torch",
            )
    _screen_payload(read, entries, _WEIGHTS_CONFIG, "weight")
    _screen_payload(read, entries, _CONSTANTS_CONFIG, "constant")
    if _SAMPLE_INPUTS in entries:
        try:
            torch.load(io.BytesIO(read(_SAMPLE_INPUTS)), weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - the safe loader raises assorted types; every one is a refusal
            raise _Refused(
                "artifact.pickled_sample_inputs",
                f"the archive's sample inputs ({_SAMPLE_INPUTS}) need full unpickling "
                f"({type(exc).__name__}); torch.export.load would fall back to it: refused unopened",
            ) from None
    try:
        # torch logs the real cause (with a traceback) and then raises a vaguer error: hold the log back
        # and quote its cause in the refusal
        with quiet_torch() as held:
            program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - torch raises assorted types for a damaged program; each is a refusal
        cause = held.last_error() or f"{type(exc).__name__}: {str(exc).strip()}"
        raise _Refused("artifact.load", f"torch.export.load refused the archive: {cause[:400]}") from None
    if not isinstance(program, ExportedProgram):
        raise _Refused("artifact.load", f"torch.export.load gave a {type(program).__name__}, not an ExportedProgram")
    return program


def _screen_payload(read: Any, entries: Mapping[str, str], config: str, what: str) -> None:
    """Refuse weights or constants that torch.export.load would unpickle."""
    if config not in entries:
        raise _Refused("artifact.layout", f"the archive has no {config}: not written by torch.export.save")
    try:
        parsed = msgspec.json.decode(read(config))
        items = parsed["config"].items()
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        raise _Refused("artifact.layout", f"{config} is not a torch.export payload config") from None
    for fqn, meta in items:
        path = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        pickled = not isinstance(meta, dict) or meta.get("use_pickle") is not False
        if pickled or (what == "constant" and not path.startswith(_TENSOR_CONSTANT)):
            raise _Refused(
                "artifact.pickled_payload",
                f"{what} {fqn!r} is stored as a pickled object ({path or 'no path'}: a tensor subclass, script "
                f"or opaque object); torch.export.load would unpickle it: refused unopened, export plain tensors",
            )


def _classify_other_zip(data: bytes, entries: dict[str, str]) -> _Refused:
    names = set(entries)
    listed = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
    if any(name.startswith("code/") for name in names) or "constants.pkl" in names:
        return _Refused(
            "artifact.torchscript",
            "TorchScript (torch.jit.save: code/, constants.pkl, data.pkl entries), not an exported program: "
            + EXPORT_HINT,
            layout="torchscript",
        )
    if "serialized_exported_program.json" in names or ("version" in names and "data.pkl" not in names):
        return _Refused(
            "artifact.legacy_export",
            "a torch.export archive in the pre-2.8 layout (serialized_exported_program.json); its loader "
            "unpickles: re-export and save with this torch",
            layout="legacy-export",
        )
    if "data.pkl" in names:
        return _classify_torch_save(data)
    return _Refused(
        "artifact.layout", f"a zip archive that is not a torch.export program (entries: {listed}); " + EXPORT_HINT
    )


def _classify_torch_save(data: bytes) -> _Refused:
    """A torch.save zip: say what it holds, opening it only with the weights-only loader."""
    try:
        value = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - the safe loader refuses anything but tensors and plain containers
        return _Refused(
            "artifact.pickle",
            "a torch.save pickle that only full unpickling could open (a whole pickled nn.Module?), not an "
            "exported program; refused unopened, a pickle can run code: " + EXPORT_HINT,
            layout="torch.save",
        )
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return _Refused(
            "artifact.state_dict",
            "a pickled state_dict, not an exported program: export with torch.export.export, or package from a "
            f"factory (`verdict models package`); it holds {len(value)} tensors and no graph",
            layout="state_dict",
            tensors=len(value),
        )
    return _Refused(
        "artifact.pickle",
        f"a torch.save file holding a {type(value).__name__}, not an exported program: " + EXPORT_HINT,
        layout="torch.save",
    )
