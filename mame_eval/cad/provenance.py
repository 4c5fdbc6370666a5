"""Provenance records (DESIGN §4 "Results"): versions, device, settings, input hashes, time."""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from mame_eval.io import file_sha256

__all__ = ["describe_device", "digest_files", "provenance", "versions"]

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
