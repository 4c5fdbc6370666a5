"""Attribution maps of a lesion classifier with Captum: Grad-CAM, saliency, occlusion.

Every function takes a :class:`~mame_eval.cad.classifier.Classifier` (its ``forward`` is the
lesion logit, so the maps explain "lesion") and a batch ``x`` of shape ``(N, C, H, W)`` (float
in [0, 1], as :meth:`Classifier.prepare` makes it) and returns a float32 numpy array
``(N, H, W)`` — one finite 2-D map per image, at the input's size:

* :func:`gradcam` — Captum ``LayerGradCam`` on the classifier's Grad-CAM layer with
  ``relu_attributions=True``, upsampled (bilinear, ``LayerAttribution.interpolate``) from the
  layer's grid to ``H × W``; non-negative.
* :func:`saliency` — Captum ``Saliency`` (absolute input gradients, Simonyan et al.), the
  maximum over channels; non-negative.
* :func:`occlusion` — Captum ``Occlusion``: the drop of the lesion logit when a
  ``window × window`` patch (moved by ``stride``) is replaced by ``baseline``, averaged over
  the windows covering a pixel; positive where hiding the pixel lowers the lesion evidence.
  ``perturbations_per_eval`` occluded copies go through the model per forward pass (batching).

``noise_tunnel`` (a :class:`NoiseTunnelSettings` or dict) wraps a method in Captum's
``NoiseTunnel`` (SmoothGrad: the average map over ``samples`` noisy copies, Gaussian noise of
standard deviation ``stdev`` in [0, 1] image units; seeded).

:func:`attribute` dispatches by method name (:data:`METHODS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mame_eval.cad.classifier import Classifier
from mame_eval.errors import InputError

__all__ = [
    "METHODS",
    "NoiseTunnelSettings",
    "attribute",
    "default_occlusion_window",
    "gradcam",
    "occlusion",
    "saliency",
]

METHODS = ("gradcam", "saliency", "occlusion")


@dataclass(frozen=True)
class NoiseTunnelSettings:
    """SmoothGrad settings: ``samples`` noisy copies, noise std ``stdev`` (image units)."""

    samples: int = 8
    stdev: float = 0.05
    kind: str = "smoothgrad"  # Captum nt_type: smoothgrad, smoothgrad_sq, vargrad
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"noise tunnel samples {self.samples}: expected >= 1")
        if not self.stdev >= 0:
            raise InputError(f"noise tunnel stdev {self.stdev}: expected >= 0")
        if self.kind not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            raise InputError(f"noise tunnel kind {self.kind!r}: expected smoothgrad, "
                             "smoothgrad_sq or vargrad")


def _nt(settings) -> NoiseTunnelSettings | None:
    if settings is None or isinstance(settings, NoiseTunnelSettings):
        return settings
    if isinstance(settings, dict):
        return NoiseTunnelSettings(**settings)
    raise InputError(f"noise_tunnel: expected a dict or NoiseTunnelSettings, got {settings!r}")


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"attribution input must be a tensor (N, C, H, W); got {shape}")
    return x.detach().float()


def _run(method, x: torch.Tensor, noise: NoiseTunnelSettings | None, **kwargs) -> torch.Tensor:
    if noise is None:
        return method.attribute(x, **kwargs)
    from captum.attr import NoiseTunnel

    state = torch.random.get_rng_state()
    torch.manual_seed(noise.seed)
    try:
        return NoiseTunnel(method).attribute(x, nt_type=noise.kind, nt_samples=noise.samples,
                                             stdevs=float(noise.stdev), **kwargs)
    finally:
        torch.random.set_rng_state(state)


def _finish(maps: torch.Tensor, n: int, hw: tuple[int, int]) -> np.ndarray:
    out = maps.detach().float().cpu().numpy().reshape(n, *hw).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def gradcam(classifier: Classifier, x: torch.Tensor, noise_tunnel=None) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` (ReLU on, upsampled to the input size), float32 >= 0."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = _check_input(x)
    method = LayerGradCam(classifier, classifier.gradcam_layer)
    with torch.enable_grad():
        attr = _run(method, x, _nt(noise_tunnel), relu_attributions=True)
    if isinstance(attr, tuple):
        attr = attr[0]
    attr = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return _finish(attr.clamp_min(0.0).sum(1), len(x), tuple(x.shape[-2:]))


def saliency(classifier: Classifier, x: torch.Tensor, noise_tunnel=None) -> np.ndarray:
    """Saliency maps ``(N, H, W)``: ``max_c |d logit / d x_c|``, float32 >= 0."""
    from captum.attr import Saliency

    x = _check_input(x)
    with torch.enable_grad():
        attr = _run(Saliency(classifier), x.requires_grad_(), _nt(noise_tunnel), abs=True)
    return _finish(attr.abs().amax(1), len(x), tuple(x.shape[-2:]))


def default_occlusion_window(size: int) -> tuple[int, int]:
    """``(window, stride)`` in pixels for an input side ``size``: ``size/16`` and half of it.

    An occluding patch larger than the lesion it should find blurs the map over the lesion's
    surroundings (every pixel's score is the mean over all patches covering it) and hides the
    lesion together with its context, so the default is no larger than the smallest lesions
    the toolkit is asked to find: phantom masses are ~8 px across at 128 px input, hence
    8 px with stride 4 at 128 px (4 px, stride 2 at 64 px; 16 px, stride 8 at 256 px). For
    other lesion sizes pass ``window`` explicitly; ``mame-eval explain`` notes when the median
    lesion is smaller than the window.
    """
    window = max(2, round(size / 16))
    return window, max(1, window // 2)


def occlusion(classifier: Classifier, x: torch.Tensor, window: int | None = None,
              stride: int | None = None, baseline: float = 0.0,
              perturbations_per_eval: int = 32, noise_tunnel=None) -> np.ndarray:
    """Occlusion maps ``(N, H, W)`` (logit drop when the region is hidden), float32.

    Args:
        window: side of the square occluding patch in input pixels (default ``H/16``, see
            :func:`default_occlusion_window`).
        stride: step between patches in pixels (default ``window // 2``).
        baseline: value the patch is filled with, in [0, 1] image units (0 = black).
        perturbations_per_eval: occluded copies per forward pass (memory vs speed).
    """
    from captum.attr import Occlusion

    x = _check_input(x)
    h, w = x.shape[-2:]
    if window is None:
        window, d_stride = default_occlusion_window(min(h, w))
    else:
        window, d_stride = int(window), max(1, int(window) // 2)
    stride = d_stride if stride is None else int(stride)
    if not 1 <= window <= min(h, w):
        raise InputError(f"occlusion window {window}: expected 1 … {min(h, w)} pixels")
    if not 1 <= stride <= min(h, w):
        raise InputError(f"occlusion stride {stride}: expected 1 … {min(h, w)} pixels")
    if perturbations_per_eval < 1:
        raise InputError(f"perturbations_per_eval {perturbations_per_eval}: expected >= 1")
    c = x.shape[1]
    with torch.no_grad():
        attr = _run(Occlusion(classifier), x, _nt(noise_tunnel),
                    sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                    baselines=float(baseline), perturbations_per_eval=perturbations_per_eval)
    return _finish(attr.sum(1) / c, len(x), (h, w))


def attribute(classifier: Classifier, x: torch.Tensor, method: str, **options) -> np.ndarray:
    """Maps ``(N, H, W)`` of ``method`` in :data:`METHODS` (options go to that function)."""
    functions = {"gradcam": gradcam, "saliency": saliency, "occlusion": occlusion}
    if method not in functions:
        raise InputError(f"unknown attribution method {method!r}; expected one of "
                         f"{', '.join(METHODS)}")
    was_training = classifier.training
    classifier.eval()
    try:
        return functions[method](classifier, x, **options)
    finally:
        classifier.train(was_training)
