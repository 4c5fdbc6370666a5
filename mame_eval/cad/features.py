"""MammoNet as a feature extractor for FID/KID (penultimate, pooled features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mame_eval.errors import ModelError
from mame_eval.io import file_sha256
from mame_eval.metrics.features import FeatureExtractor
from mame_eval.models.loading import EMBEDDED_MAMMONET  # the shipped MammoNet-tiny


def mammonet_extractor(directory: Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """Features ``(N, D)`` of :meth:`MammoNet.embed` on gray images resized to its input size.

    ``directory`` defaults to the embedded MammoNet-tiny.
    """
    import torch

    from mame_eval.cad.data import to_input
    from mame_eval.cad.model import MammoNet

    directory = Path(directory) if directory is not None else EMBEDDED_MAMMONET
    if not directory.is_dir():
        raise ModelError(f"MammoNet folder {directory} not found; pass --features with a "
                         "folder written by 'mame-eval train cad'")
    model = MammoNet.from_pretrained(directory, device=device)
    weights = next(directory.glob("*.safetensors"), None)
    identity = f"mammonet:{file_sha256(weights) if weights else directory}"

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.cat([to_input(img[..., 0], model.image_size) for img in batch]).to(device)
        with torch.no_grad():
            return model.embed(x).double().cpu().numpy()

    return FeatureExtractor("mammonet", identity, fn,
                            resize=f"{model.image_size}×{model.image_size}, bilinear antialiased")
