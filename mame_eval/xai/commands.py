"""Thin Typer commands for the CLI to mount: ``mame-eval explain`` and ``mame-eval train cad``.

Mount with, e.g.::

    from mame_eval.xai.commands import explain_command, train_cad_command
    app.command("explain")(explain_command)
    train_app.command("cad")(train_cad_command)      # mame-eval train cad CONFIG.toml

They only parse, call the library (:func:`mame_eval.xai.explain.explain`,
:func:`mame_eval.cad.train.train_cad`) and print; library errors propagate as
:class:`~mame_eval.errors.MameError` for ``cli.main`` to report in one line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mame_eval.errors import InputError
from mame_eval.progress import progress_bar

__all__ = ["explain_command", "parse_groups", "train_cad_command"]


def parse_groups(items: list[str]) -> dict[str, Path]:
    """``["real=prep/lesion", "inpainted=runs/x"]`` → ``{"real": Path(...), ...}``."""
    groups: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--group {item!r}: expected NAME=DIR")
        if name.strip() in groups:
            raise InputError(f"--group {name.strip()!r} given twice")
        groups[name.strip()] = Path(path.strip())
    return groups


def explain_command(
    images: Path | None = typer.Option(
        None, "--images", help="Images to explain: a folder of images, or a prepared lesion "
        "folder (with images/ and masks/)."),
    masks: Path | None = typer.Option(
        None, "--masks", help="Lesion masks of --images, same file names (default: "
        "DIR/masks for a prepared lesion folder, else DIR/../masks when it exists)."),
    cad: Path | None = typer.Option(
        None, "--cad", help="Classifier: a MammoNet folder (mame-eval train cad) or a "
        "TorchScript file. Default: the shipped MammoNet-tiny."),
    methods: str = typer.Option("gradcam,saliency,occlusion", "--methods",
                                help="Comma-separated attribution methods."),
    group: list[str] = typer.Option(
        [], "--group", help="NAME=DIR: one more group to explain and compare (repeatable); "
        "DIR as for --images, masks found the same way."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    name: str = typer.Option("images", "--name", help="Group name of --images."),
    layer: str | None = typer.Option(None, "--layer", help="Grad-CAM layer of a TorchScript "
                                     "classifier (dotted module name, e.g. layer4)."),
    lesion_index: int | None = typer.Option(None, "--lesion-index", help="Output index of the "
                                            "lesion class of a TorchScript classifier."),
    channels: int | None = typer.Option(None, "--channels", help="Input channels of a "
                                        "TorchScript classifier (1 or 3; default 1)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Resize side for a "
                                          "TorchScript classifier (default: none)."),
    occlusion_window: int | None = typer.Option(None, help="Occlusion patch side in "
                                                "classifier-input pixels (default size/8)."),
    occlusion_stride: int | None = typer.Option(None, help="Occlusion step (default "
                                                "window/2)."),
    smoothgrad: int = typer.Option(0, help="SmoothGrad samples for Grad-CAM and saliency "
                                   "(0: off)."),
    tolerance: float = typer.Option(0.0, help="Pointing-game tolerance in pixels."),
    max_images: int | None = typer.Option(None, help="At most this many images per group."),
    heatmap_rows: int = typer.Option(6, help="Rows of heatmaps.png."),
    batch_size: int = typer.Option(8, help="Images per batch."),
    seed: int = typer.Option(0, help="Seed of the bootstrap (and SmoothGrad noise)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Grad-CAM / saliency / occlusion heatmaps of a lesion classifier, scored against the
    lesion masks (pointing game, relevance mass and rank, energy pointing game), with group
    comparisons (e.g. real vs inpainted lesions)."""
    from mame_eval.xai.explain import default_cad, explain

    cad = cad if cad is not None else default_cad()  # fail before the progress bar starts
    noise = {"samples": smoothgrad, "seed": seed} if smoothgrad > 0 else None
    update, bar = progress_bar("explain", "img")
    with bar:
        result = explain(
            images, masks, groups=parse_groups(group), cad=cad,
            methods=[m.strip() for m in methods.split(",") if m.strip()], out=out, name=name,
            layer=layer, lesion_index=lesion_index, channels=channels, image_size=image_size,
            batch_size=batch_size, occlusion_window=occlusion_window,
            occlusion_stride=occlusion_stride, noise_tunnel=noise, tolerance=tolerance,
            max_images=max_images, heatmap_rows=heatmap_rows, seed=seed, device=device,
            progress=update)
    typer.echo(result.render())


def train_cad_command(
    config: Path = typer.Argument(..., help="Training config (TOML), e.g. "
                                  "training/cad-tiny.toml."),
    set: list[str] = typer.Option([], "--set", help="Override a config key: key=value "
                                  "(dotted for tables, e.g. model.width=32); repeatable."),
) -> None:
    """Train MammoNet (lesion + attribute heads) on a prepared dataset; writes the model,
    metrics.json (held-out lesion AUROC with CI, attribute accuracies) and provenance."""
    from mame_eval.cad.train import load_cad_config, train_cad

    cfg = load_cad_config(config, set)
    update, bar = progress_bar("train cad", "step")
    with bar:
        result = train_cad(cfg, progress=update)
    typer.echo(result.summary())
