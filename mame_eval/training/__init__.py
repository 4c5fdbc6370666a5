"""Fine-tuning MAM-E on Accelerate: healthy text-to-image and lesion inpainting.

    from mame_eval.training import load_config, train_healthy
    result = train_healthy(load_config("training/tiny-healthy.toml", ["max_train_steps=3"]))
"""

from __future__ import annotations

from collections.abc import Callable

from mame_eval.config import parse_override
from mame_eval.training.config import TrainConfig, load_config
from mame_eval.training.trainer import TrainResult, list_checkpoints, train, widen_conv_in

__all__ = [
    "TrainConfig",
    "TrainResult",
    "list_checkpoints",
    "load_config",
    "parse_override",
    "train",
    "train_healthy",
    "train_inpaint",
    "widen_conv_in",
]


def train_healthy(config: TrainConfig,
                  progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Text-to-image fine-tuning on ``DATA/healthy`` (the paper's healthy models)."""
    return train(config, "healthy", progress)


def train_inpaint(config: TrainConfig,
                  progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Lesion-inpainting fine-tuning on ``DATA/lesion`` (9-channel UNet)."""
    return train(config, "inpaint", progress)
