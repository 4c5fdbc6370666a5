"""MammoNet: a compact mammogram CNN with a lesion head and the prompt-attribute heads.

Input: float32 ``(N, 1, S, S)`` gray images scaled to ``[0, 1]`` (8-bit value ÷ 255) at the
configured ``image_size`` ``S``; the model normalises internally (``pixel_mean``,
``pixel_std``). Output of :meth:`MammoNet.forward` — a dict of logits:

* ``"lesion"``: ``(N,)`` — mass vs normal (sigmoid → probability of a lesion);
* ``"view"`` ``(N, 2)``, ``"density"`` ``(N, 4)``, ``"area"`` ``(N, 3)``, ``"vendor"``
  ``(N, 2)`` — classes in the order of :data:`ATTRIBUTES` (the enums of
  :mod:`mame_eval.prompts`: view CC/MLO, density very low…very high = BI-RADS A–D, area
  small/medium/big, vendor hologic/siemens);
* ``"lesion_map"`` ``(N, S/r, S/r)`` — a coarse per-cell lesion logit on the last stage's grid
  (output stride ``r``): an auxiliary output that training supervises with the lesion boxes
  (deep supervision, ``mask_weight``); the lesion head itself pools the whole feature map.

Backbones (random initialisation only — nothing is downloaded):

* ``"resnet-small"`` (default): a ResNet-like net of :class:`BasicBlock` stages with
  ``width·(1, 2, 4, …)`` channels (default three stages, output stride 16, so Grad-CAM has a
  16 × 16 grid at 256 px) — about 0.1 M parameters at ``width=16``;
* ``"resnet18"``: torchvision's ResNet-18 with a 1-channel stem.

:meth:`MammoNet.save_pretrained` writes ``config.json`` + ``model.safetensors``;
:meth:`MammoNet.from_pretrained` reads them back (bit-identical outputs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from mame_eval.errors import ConfigError, ModelError
from mame_eval.prompts import Area, Density, Vendor, View

__all__ = ["ATTRIBUTES", "CONFIG_NAME", "WEIGHTS_NAME", "MammoNet", "MammoNetConfig"]

#: Attribute heads and their class names, in logit order.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "view": tuple(v.value for v in View),
    "density": tuple(d.value for d in Density),
    "area": tuple(a.value for a in Area),
    "vendor": tuple(v.value for v in Vendor),
}

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class MammoNetConfig(BaseModel):
    """Architecture of a :class:`MammoNet` (saved as ``config.json``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["resnet-small", "resnet18"] = "resnet-small"
    image_size: int = Field(256, ge=32, le=4096, description="input side S in pixels")
    width: int = Field(16, ge=4, le=512, description="resnet-small: channels of stage 1")
    stem: Literal["conv", "patch"] = Field(
        "conv", description="resnet-small: 'conv' = 5×5/2 conv + 2×2 max-pool; 'patch' = "
        "4×4/4 conv (cheaper at large inputs); both have output stride 4")
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 1], min_length=1,
                              max_length=6, description="resnet-small: blocks per stage")
    pool: Literal["avg", "max", "avgmax"] = Field(
        "avgmax", description="global pooling before the heads (avgmax: both, concatenated)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pixel_mean: float = Field(0.25, description="input normalisation, in [0, 1] units")
    pixel_std: float = Field(0.25, gt=0.0)
    attributes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in ATTRIBUTES.items()})
    gradcam_layer: str | None = Field(
        None, description="module name for Grad-CAM; default: the last stage")

    @field_validator("blocks")
    @classmethod
    def _blocks_positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 or b > 16 for b in value):
            raise ValueError("every stage needs 1 … 16 blocks")
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes_nonempty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, classes in value.items():
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ValueError(f"attribute {name!r} needs at least 2 distinct classes")
        return value


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def _small_backbone(width: int, blocks: list[int], stem: str) -> tuple[nn.Sequential, int]:
    """Stem (5×5/2 conv + 2×2 max-pool, or a 4×4/4 "patch" conv) then one stage per entry of
    ``blocks``; stride 2 from stage 2 on. Output stride ``4 · 2^(len(blocks) - 1)``."""
    if stem == "patch":
        first = [nn.Conv2d(1, width, 4, 4, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    else:
        first = [nn.Conv2d(1, width, 5, 2, 2, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                 nn.MaxPool2d(2)]
    layers: dict[str, nn.Module] = {"stem": nn.Sequential(*first)}
    c_in = width
    for i, n in enumerate(blocks):
        c_out = width * 2 ** i
        stage = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
        stage += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
        layers[f"stage{i + 1}"] = nn.Sequential(*stage)
        c_in = c_out
    return nn.Sequential(_ordered(layers)), c_in


def _ordered(layers: dict[str, nn.Module]):
    from collections import OrderedDict

    return OrderedDict(layers)


def _resnet18_backbone() -> tuple[nn.Sequential, int]:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    layers = {"stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
              "stage1": net.layer1, "stage2": net.layer2, "stage3": net.layer3,
              "stage4": net.layer4}
    return nn.Sequential(_ordered(layers)), 512


class MammoNet(nn.Module):
    """Lesion + attribute classifier (see the module docstring for inputs and outputs).

    Example::

        net = MammoNet(MammoNetConfig(image_size=128, width=16))
        out = net(torch.rand(2, 1, 128, 128))   # {"lesion": (2,), "view": (2, 2), ...}
        net.save_pretrained("runs/cad"); net = MammoNet.from_pretrained("runs/cad")
    """

    def __init__(self, config: MammoNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            try:
                config = MammoNetConfig(**kwargs)
            except ValidationError as exc:
                raise ConfigError(f"MammoNet config: {_first_error(exc)}") from None
        elif kwargs:
            raise ConfigError("pass either a MammoNetConfig or keyword settings, not both")
        self.config = config
        if config.arch == "resnet18":
            self.features, channels = _resnet18_backbone()
        else:
            self.features, channels = _small_backbone(config.width, config.blocks, config.stem)
        pooled = channels * (2 if config.pool == "avgmax" else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.lesion_head = nn.Linear(pooled, 1)
        self.lesion_map_head = nn.Conv2d(channels, 1, 1)
        self.attribute_heads = nn.ModuleDict(
            {name: nn.Linear(pooled, len(classes)) for name, classes in config.attributes.items()})
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std), persistent=False)
        self.gradcam_layer_name = config.gradcam_layer or f"features.{self._stage_names()[-1]}"
        _ = self.gradcam_layer  # validate the name early

    def _stage_names(self) -> list[str]:
        return [name for name, _ in self.features.named_children()]

    @property
    def gradcam_layer(self) -> nn.Module:
        """The module whose activations Grad-CAM uses (default: the last backbone stage)."""
        modules = dict(self.named_modules())
        if self.gradcam_layer_name not in modules:
            raise ConfigError(
                f"gradcam_layer {self.gradcam_layer_name!r} is not a module of MammoNet; "
                f"e.g. {', '.join('features.' + n for n in self._stage_names())}")
        return modules[self.gradcam_layer_name]

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.pool == "avg":
            return h.mean((2, 3))
        if self.config.pool == "max":
            return h.amax((2, 3))
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features ``(N, C, S/r, S/r)`` (``r`` = output stride) of ``x`` in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ModelError(f"MammoNet expects input (N, 1, H, W); got {tuple(x.shape)}")
        return self.features((x - self.pixel_mean) / self.pixel_std)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, D)`` of images ``(N, 1, S, S)`` in [0, 1]."""
        return self._pool(self.feature_map(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``{"lesion": (N,), <attribute>: (N, n_classes), ..., "lesion_map":
        (N, S/r, S/r)}`` — ``lesion_map`` is the coarse per-cell lesion logit (trained from the
        lesion boxes when ``mask_weight > 0``; not used by the lesion head)."""
        h = self.feature_map(x)
        z = self.dropout(self._pool(h))
        out = {"lesion": self.lesion_head(z).squeeze(1)}
        for name, head in self.attribute_heads.items():
            out[name] = head(z)
        out["lesion_map"] = self.lesion_map_head(h)[:, 0]
        return out

    # -- persistence -------------------------------------------------------------------------

    def save_pretrained(self, directory: Path | str) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from safetensors.torch import save_file

        from mame_eval.io import atomic_path, write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            # one metadata key: safetensors writes metadata in hash order (several keys would
            # make the bytes differ between identical saves)
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json(directory / CONFIG_NAME,
                   {"model_type": "mammonet", **self.config.model_dump()})
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path | str, device: str | torch.device = "cpu"
                        ) -> MammoNet:
        """Load a folder written by :meth:`save_pretrained`; the model is in eval mode.

        Raises:
            ModelError: missing files, a config of another model type, or weights that do not
                match the config.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelError(f"{directory}: not a MammoNet folder ({p.name} missing; "
                                 f"expected {CONFIG_NAME} + {WEIGHTS_NAME})")
        try:
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{cfg_path}: unreadable config ({exc})") from None
        model_type = data.pop("model_type", "mammonet")
        if model_type != "mammonet":
            raise ModelError(f"{cfg_path}: model_type {model_type!r}, expected 'mammonet'")
        try:
            config = MammoNetConfig(**data)
        except ValidationError as exc:
            raise ModelError(f"{cfg_path}: {_first_error(exc)}") from None
        model = cls(config)
        try:
            state = load_file(str(w_path))
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors/torch raise several types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{w_path}: weights do not fit the config ({first})") from None
        return model.to(device).eval()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    return f"{loc}: {err['msg']}"
