"""Install trained models as the embedded defaults in ``mame_eval/assets`` (maintainers' tool).

    python -m mame_eval.models.assets install --txt2img runs/embedded/mame-tiny \\
        --inpaint runs/embedded/mame-tiny-inpaint --cad runs/embedded/mammonet-tiny

(``training/build-embedded.sh`` runs it last; ``install --inpaint DIR`` alone replaces only
that model.) The diffusion pipelines are saved again with
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

#: All shipped assets together may not exceed this (the issue: "at most 15 MB").
MAX_ASSET_BYTES = 15_000_000
_PROVENANCE = ("train_info.json", "metrics.json", "vae_info.json")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _write_pipeline(source: Path, task: str, target: Path) -> None:
    """Save the pipeline in ``source`` into ``target`` with float16 weights."""
    import torch

    from mame_eval.models.loading import load_pipeline

    pipe = load_pipeline(str(source), task=task, device="cpu", dtype="fp32")
    pipe.to(torch.float16)
    with quiet():
        pipe.save_pretrained(target, safe_serialization=True)
    _copy_provenance(source, target)


def _write_mammonet(source: Path, target: Path) -> None:
    """Copy a MammoNet folder (config, weights, metrics) into ``target``."""
    from mame_eval.cad.model import CONFIG_NAME, WEIGHTS_NAME, MammoNet

    MammoNet.from_pretrained(source)  # refuse anything that does not load
    target.mkdir(parents=True, exist_ok=True)
    for part in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(Path(source) / part, target / part)
    _copy_provenance(source, target)


def _copy_provenance(source: Path, target: Path) -> None:
    for extra in _PROVENANCE:
        if (Path(source) / extra).is_file():
            shutil.copy2(Path(source) / extra, target / extra)


def install(txt2img: Path | None, inpaint: Path | None, cad: Path | None,
            assets: Path = ASSETS) -> dict[str, int]:
    """Install models as ``assets/{mame-tiny, mame-tiny-inpaint, mammonet-tiny}``.

    Any of the three may be ``None``: that shipped model stays as it is (e.g. a retrained
    inpainting model alone). The given ones are written into a staging folder first and
    measured together with the kept ones; only when every one was written and all fit
    :data:`MAX_ASSET_BYTES` do they replace the shipped ones, so a failed or oversized build
    never leaves a half-installed set. Returns the bytes of each model in ``assets``.
    """
    assets = Path(assets)
    writers = {"mame-tiny": (txt2img, lambda src, dst: _write_pipeline(src, "txt2img", dst)),
               "mame-tiny-inpaint": (inpaint,
                                     lambda src, dst: _write_pipeline(src, "inpaint", dst)),
               "mammonet-tiny": (cad, _write_mammonet)}
    if all(source is None for source, _ in writers.values()):
        raise ModelError("nothing to install: give --txt2img, --inpaint and/or --cad")
    staging = assets.with_name(f".{assets.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for name, (source, write) in writers.items():
            if source is not None:
                write(Path(source), staging / name)
        new = {p.name: folder_bytes(p) for p in sorted(staging.iterdir())}
        kept = {name: folder_bytes(assets / name) for name in writers
                if name not in new and (assets / name).is_dir()}
        sizes = dict(sorted({**kept, **new}.items()))
        total = sum(sizes.values())
        if total > MAX_ASSET_BYTES:
            raise ModelError(f"the embedded models take {total / 1e6:.1f} MB, more than the "
                             f"{MAX_ASSET_BYTES / 1e6:.0f} MB allowed; use smaller models "
                             f"(nothing in {assets} was changed)")
        assets.mkdir(parents=True, exist_ok=True)
        for name in new:
            target, old = assets / name, assets / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            (staging / name).rename(target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sizes


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a maintainer's command
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="install trained models as the embedded defaults "
                         "(those not given stay as shipped)")
    cmd.add_argument("--txt2img", type=Path)
    cmd.add_argument("--inpaint", type=Path)
    cmd.add_argument("--cad", type=Path)
    args = parser.parse_args(argv)
    sizes = install(args.txt2img, args.inpaint, args.cad)
    for name, size in sizes.items():
        print(f"{name}: {size / 1e6:.2f} MB")
    print(f"total: {sum(sizes.values()) / 1e6:.2f} MB in {ASSETS}")


if __name__ == "__main__":  # pragma: no cover
    main()
