"""The CAD classifier: MammoNet (lesion + attribute heads), its training, user classifiers.

* :class:`MammoNet` / :class:`MammoNetConfig` — the model; ``save_pretrained`` /
  ``from_pretrained`` (safetensors + JSON config).
* :func:`train_cad` — ``mame-eval train cad CONFIG.toml`` on a prepared dataset.
* :func:`load_classifier` — a MammoNet folder, a user's TorchScript file or an ``nn.Module``
  behind one :class:`Classifier` interface (lesion logit; Grad-CAM layer) for :mod:`mame_eval.xai`.

Imports are lazy so that ``import mame_eval.cad`` does not import torch.
"""

from __future__ import annotations

__all__ = ["CadTrainConfig", "Classifier", "MammoNet", "MammoNetConfig", "load_cad_config",
           "load_classifier", "train_cad"]

_WHERE = {
    "MammoNet": "model", "MammoNetConfig": "model",
    "Classifier": "classifier", "load_classifier": "classifier",
    "CadTrainConfig": "train", "load_cad_config": "train", "train_cad": "train",
}


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"mame_eval.cad.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mame_eval.cad' has no attribute {name!r}")
