"""A loadable pipeline from a training checkpoint, without the training data.

A run stopped early (a CPU budget, a better validation score at an earlier step) leaves
``checkpoint-N`` folders — Accelerate's state: the trained UNet as ``model.safetensors``, the
text encoder as ``model_1.safetensors`` when it was trained, plus optimizer and RNG state —
but no pipeline. :func:`export_checkpoint` rebuilds the components the config describes (so
the frozen VAE, tokenizer and scheduler are those the run trained with), loads the checkpoint's
weights into them and saves the pipeline, as the end of :func:`~mame_eval.training.trainer.train`
would have: no dataset is read and no latents are cached.

    python -m mame_eval.training.export CONFIG --task inpaint --checkpoint checkpoint-400 \\
        [--out DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mame_eval.errors import ConfigError
from mame_eval.io import write_json
from mame_eval.training.config import TrainConfig, load_config


def _checkpoint_folder(config: TrainConfig, checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    if not path.is_dir():
        path = Path(config.output_dir) / str(checkpoint)
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"checkpoint {str(checkpoint)!r}: no model.safetensors in {path} "
                          f"(expected a checkpoint-N folder of {config.output_dir})")
    return path


def export_checkpoint(config: TrainConfig, task: str, checkpoint: str | Path,
                      out: Path | None = None) -> Path:
    """Save the pipeline of ``checkpoint`` (a folder, or its name in ``config.output_dir``)
    into ``out`` (default ``config.output_dir``) with a ``train_info.json``; returns ``out``."""
    from safetensors.torch import load_file

    from mame_eval.models.loading import quiet
    from mame_eval.training.trainer import _pipeline, _versions, load_components, widen_conv_in

    folder = _checkpoint_folder(config, checkpoint)
    step = folder.name.split("-")[-1]
    parts = load_components(config, task)
    if task == "inpaint":
        widen_conv_in(parts["unet"])
    parts["unet"].load_state_dict(load_file(folder / "model.safetensors"))
    if config.train_text_encoder:
        parts["text_encoder"].load_state_dict(load_file(folder / "model_1.safetensors"))
    pipe = _pipeline(task, parts, parts["unet"], parts["text_encoder"], parts["base_scheduler"])
    out = Path(out or config.output_dir)
    with quiet():
        pipe.save_pretrained(out, safe_serialization=True)
    write_json(out / "train_info.json", {
        "result": {"task": task, "global_step": int(step) if step.isdigit() else None,
                   "exported_from": str(folder)},
        "config": config.model_dump(mode="json"), "versions": _versions()})
    return out


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a maintainer's command
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--task", choices=("healthy", "inpaint"), required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides, task=args.task)
    print(export_checkpoint(config, args.task, args.checkpoint, args.out))


if __name__ == "__main__":  # pragma: no cover
    main()
