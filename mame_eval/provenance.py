"""Provenance records (DESIGN §4 "Results"): versions, device, settings, input hashes, time."""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from mame_eval.io import file_sha256

__all__ = ["command_line", "describe_device", "describe_input", "digest_files", "provenance",
           "set_command_line", "versions"]

#: the command line of this process when it was started by the ``mame-eval`` CLI (set by
#: :func:`mame_eval.cli.main`); library callers leave it None and provenance names the run kind.
_COMMAND_LINE: str | None = None


def set_command_line(argv: list[str]) -> None:
    """Record how this process was started (``mame-eval diversity --out …``) for provenance."""
    import shlex

    global _COMMAND_LINE
    _COMMAND_LINE = shlex.join(["mame-eval", *argv])


def command_line(default: str) -> str:
    """The recorded command line, or ``default`` (the run kind) when called as a library."""
    return _COMMAND_LINE or default

_PACKAGES = ("mame-eval", "torch", "torchvision", "captum", "numpy", "scipy", "safetensors",
             "pydantic")


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that shape the numbers."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def digest_files(paths: Iterable[Path], root: Path | None = None) -> dict:
    """``{"n_files", "sha256"}``: one SHA-256 over the sorted (relative name, file hash) pairs."""
    entries = []
    for p in paths:
        p = Path(p)
        name = str(p.relative_to(root)) if root is not None else p.name
        entries.append(f"{name}\t{file_sha256(p)}")
    entries.sort()
    return {"n_files": len(entries),
            "sha256": hashlib.sha256("\n".join(entries).encode()).hexdigest()}


def describe_input(path: Path | str, files: Iterable[Path] | None = None) -> dict:
    """``{"path", "sha256", "n_files"}`` of an input file or folder (its ``files``, default:
    every file below it), the record that lets a report tell whether two runs saw the same
    data."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "sha256": file_sha256(path), "n_files": 1}
    if files is None:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    return {"path": str(path), **digest_files(files, root=path)}


def provenance(*, command: str, settings: dict, inputs: dict, device: str,
               wall_time_s: float, **extra) -> dict:
    """The ``provenance.json`` record of one run."""
    import datetime

    return {
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "device": device,
        "settings": settings,
        "inputs": inputs,
        "wall_time_s": round(float(wall_time_s), 3),
        **extra,
    }


def describe_device(device) -> str:
    """``"cpu (2 threads)"`` or ``"cuda:0 (NVIDIA H100 …)"``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"
