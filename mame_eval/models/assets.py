"""Install trained models as the embedded defaults in ``mame_eval/assets`` (maintainers' tool).

    python -m mame_eval.models.assets install --txt2img runs/embedded/mame-tiny \\
        --inpaint runs/embedded/mame-tiny-inpaint --cad runs/embedded/mammonet-tiny

(``training/build-embedded.sh`` runs it last.) The diffusion pipelines are saved again with
``save_pretrained`` and their weights in float16 — half the bytes; every command loads them
back in the precision it asks for (fp32 on a CPU) — and only the files that make up a model
are copied: no checkpoints, logs or validation grids. Each model keeps its ``train_info.json``
(or MammoNet's ``metrics.json``) as provenance. The assets must stay small (DESIGN §5).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mame_eval.errors import ModelError
from mame_eval.models.loading import ASSETS, quiet

#: All shipped assets together may not exceed this (issue: "at most 15 MB").
MAX_ASSET_BYTES = 15 * 2**20
_PROVENANCE = ("train_info.json", "metrics.json", "vae_info.json")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _replace(target: Path, fill) -> None:
    """Write a new ``target`` folder beside the old one, then swap it in (never half-written)."""
    tmp = target.with_name(f".{target.name}.installing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def install_pipeline(source: Path, name: str, task: str, assets: Path = ASSETS) -> Path:
    """Save the pipeline in ``source`` as ``assets/name`` with float16 weights."""
    import torch

    from mame_eval.models.loading import load_pipeline

    pipe = load_pipeline(str(source), task=task, device="cpu", dtype="fp32")
    pipe.to(torch.float16)

    def fill(tmp: Path) -> None:
        with quiet():
            pipe.save_pretrained(tmp, safe_serialization=True)
        for extra in _PROVENANCE:
            if (Path(source) / extra).is_file():
                shutil.copy2(Path(source) / extra, tmp / extra)

    target = assets / name
    _replace(target, fill)
    return target


def install_mammonet(source: Path, name: str = "mammonet-tiny", assets: Path = ASSETS) -> Path:
    """Copy a MammoNet folder (config, weights, metrics) into ``assets/name``."""
    from mame_eval.cad.model import CONFIG_NAME, WEIGHTS_NAME, MammoNet

    MammoNet.from_pretrained(source)  # refuse anything that does not load

    def fill(tmp: Path) -> None:
        for part in (CONFIG_NAME, WEIGHTS_NAME, *_PROVENANCE):
            if (Path(source) / part).is_file():
                shutil.copy2(Path(source) / part, tmp / part)

    target = assets / name
    _replace(target, fill)
    return target


def install(txt2img: Path, inpaint: Path, cad: Path, assets: Path = ASSETS) -> dict[str, int]:
    """Install all three; returns the bytes of each. Raises when the total is too large."""
    installed = [install_pipeline(txt2img, "mame-tiny", "txt2img", assets),
                 install_pipeline(inpaint, "mame-tiny-inpaint", "inpaint", assets),
                 install_mammonet(cad, "mammonet-tiny", assets)]
    sizes = {p.name: folder_bytes(p) for p in installed}
    total = folder_bytes(assets)
    if total > MAX_ASSET_BYTES:
        raise ModelError(f"{assets}: {total / 2**20:.1f} MB of assets, more than the "
                         f"{MAX_ASSET_BYTES / 2**20:.0f} MB allowed; use smaller models")
    return sizes


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a maintainer's command
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="install trained models as the embedded defaults")
    cmd.add_argument("--txt2img", type=Path, required=True)
    cmd.add_argument("--inpaint", type=Path, required=True)
    cmd.add_argument("--cad", type=Path, required=True)
    args = parser.parse_args(argv)
    sizes = install(args.txt2img, args.inpaint, args.cad)
    for name, size in sizes.items():
        print(f"{name}: {size / 2**20:.2f} MB")
    print(f"total in {ASSETS}: {folder_bytes(ASSETS) / 2**20:.2f} MB")


if __name__ == "__main__":  # pragma: no cover
    main()
