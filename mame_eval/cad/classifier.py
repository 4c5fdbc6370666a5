"""One interface for every lesion classifier the XAI code explains.

:func:`load_classifier` accepts

* a MammoNet folder (``config.json`` + ``model.safetensors``, from :func:`train_cad`);
* a user's **TorchScript** file (``torch.jit.save`` of a scripted or traced model), with the
  name of the Grad-CAM layer (``layer="layer4"``, dotted for nested modules) and the output
  index of the lesion class (``lesion_index``);
* an ``nn.Module`` object (eager PyTorch), likewise.

and returns a :class:`Classifier`: ``forward(x)`` maps images ``(N, C, H, W)`` float32 in
``[0, 1]`` to the **lesion logit** ``(N,)`` (the quantity attributions explain), ``score(x)`` to
the lesion probability ``(N,)``, and :attr:`Classifier.gradcam_layer` is a module Captum can
hook.

Output conventions of user models: an output of shape ``(N,)`` or ``(N, 1)`` is one logit
(probability = sigmoid; ``lesion_index`` must be omitted or 0). An output ``(N, K)`` with
``K >= 2`` holds class logits: the explained quantity is ``out[:, lesion_index]`` (the class
score before softmax, as in Grad-CAM) and the probability is ``softmax(out)[:, lesion_index]``;
``lesion_index`` defaults to 1 when ``K == 2`` and is required otherwise. A tuple/list output
uses its first element. A user model receives the images as float32 in ``[0, 1]`` with
``channels`` channels (gray replicated) at ``image_size`` (or the image's own size when
omitted): put any further normalisation inside the model.

TorchScript modules refuse Python hooks, which Grad-CAM needs. For Grad-CAM the wrapper runs the
model's own TorchScript code (``module.code``) as Python along the path to the chosen layer —
the modules off that path still run as compiled TorchScript — and calls the layer through a
hookable stand-in. The first call checks that this gives the same output as the compiled
model; a model whose code cannot be run this way raises :class:`ModelError` with the reason
(saliency and occlusion do not need it).
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path

import torch
from torch import nn

from mame_eval.cad.model import CONFIG_NAME, MammoNet
from mame_eval.errors import ModelError

__all__ = ["Classifier", "load_classifier"]


class Classifier(nn.Module):
    """Uniform lesion-classifier wrapper (see the module docstring).

    Attributes:
        model: the wrapped model (MammoNet, ScriptModule or nn.Module).
        kind: ``"mammonet"``, ``"torchscript"`` or ``"module"``.
        channels: input channels the model expects (1 or 3).
        image_size: side the images are resized to, or ``None`` for the image's own size.
        layer_name: name of the Grad-CAM layer, or ``None``.
        source: where it was loaded from (for provenance).
    """

    def __init__(self, model: nn.Module, *, kind: str, layer: str | None,
                 lesion_index: int | None, channels: int, image_size: int | None,
                 source: str = "") -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.channels = int(channels)
        self.image_size = image_size
        self.lesion_index = lesion_index
        self.layer_name = layer
        self.source = source
        self._tap: nn.Module | None = None
        self._python_forward = None
        self._verified = False
        if kind == "mammonet":
            self._layer = model.gradcam_layer if layer is None else _find_module(model, layer)
        elif layer is None:
            self._layer = None
        elif kind == "module":
            self._layer = _find_module(model, layer)
        else:
            self._tap = _Tap(_find_module(model, layer))
            self._layer = self._tap
            self._python_forward = _pythonise(model, layer.split("."), self._tap)

    # -- the explained quantity -----------------------------------------------------------------

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw model output as ``(N, K)`` (``K = 1`` for a single logit)."""
        if self.kind == "mammonet":
            return self.model(x)["lesion"].unsqueeze(1)
        if self._python_forward is not None:
            out = self._python_forward(x)
            if not self._verified:
                self._verify(x, out)
        else:
            out = self.model(x)
        return _as_2d(out, len(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion logit ``(N,)`` of images ``(N, C, H, W)`` in [0, 1]."""
        out = self.outputs(x)
        return out[:, self._index(out.shape[1])]

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion probability ``(N,)`` in [0, 1]."""
        out = self.outputs(x)
        k = out.shape[1]
        if k == 1:
            return torch.sigmoid(out[:, 0])
        return torch.softmax(out, dim=1)[:, self._index(k)]

    def _index(self, k: int) -> int:
        idx = self.lesion_index
        if k == 1:
            if idx not in (None, 0):
                raise ModelError(f"lesion_index {idx}: the model has a single output")
            return 0
        if idx is None:
            if k == 2:
                return 1
            raise ModelError(f"the model has {k} outputs: give lesion_index (0 … {k - 1})")
        if not 0 <= idx < k:
            raise ModelError(f"lesion_index {idx} is out of range for {k} outputs")
        return idx

    @property
    def gradcam_layer(self) -> nn.Module:
        """The hookable module whose activations Grad-CAM uses."""
        if self._layer is None:
            raise ModelError(f"{self.source or 'classifier'}: Grad-CAM needs a layer name "
                             "(--layer, e.g. 'layer4')")
        return self._layer

    # -- input ------------------------------------------------------------------------------------

    def prepare(self, images) -> torch.Tensor:
        """8-bit gray images (each ``(H, W)`` uint8) → model input ``(N, C, S, S)`` in [0, 1].

        Images are resized (bilinear, antialiased) to ``image_size`` when it is set; otherwise
        they must all have the same size.
        """
        from mame_eval.cad.data import to_input

        tensors = [to_input(img, self.image_size) for img in images]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ModelError(f"images of different sizes {sorted(shapes)}: set image_size")
        x = torch.cat(tensors)
        if self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1).contiguous()
        return x.to(self.device)

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        for b in self.model.buffers():
            return b.device
        return torch.device("cpu")

    def _verify(self, x: torch.Tensor, out) -> None:
        with torch.no_grad():
            ref = _as_2d(self.model(x), len(x))
            got = _as_2d(out, len(x)).detach()
        if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-4, atol=1e-5):
            raise ModelError(
                f"{self.source}: running the TorchScript code of the path to layer "
                f"{self.layer_name!r} as Python gives another output than the compiled model; "
                "Grad-CAM cannot use this layer (try another layer)")
        if not self._tap.called:
            raise ModelError(f"{self.source}: layer {self.layer_name!r} is not called by the "
                             "model's forward; choose a layer on the path to the output")
        self._verified = True


def _as_2d(out, n: int) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        if not out:
            raise ModelError("the model returned an empty tuple")
        out = out[0]
    if isinstance(out, dict):
        raise ModelError("the model returned a dict; return a tensor of logits (N, K)")
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model returned {type(out).__name__}; expected a tensor (N, K)")
    if out.ndim == 1 and out.shape[0] == n:
        return out.unsqueeze(1)
    if out.ndim == 2 and out.shape[0] == n:
        return out
    raise ModelError(f"model output has shape {tuple(out.shape)}; expected ({n},) or ({n}, K)")


def _find_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        top = [n for n, _ in model.named_children()]
        raise ModelError(f"layer {name!r} not found in the model; top-level modules: "
                         f"{', '.join(top) or '(none)'}")
    return modules[name]


class _Tap(nn.Module):
    """A hookable stand-in that calls a (TorchScript) module."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.called = False

    def forward(self, *args):
        self.called = True
        return self.inner(*args)


class _TorchNamespace:
    """``torch`` as TorchScript's printed code uses it (``torch.dim(x)`` → ``Tensor.dim``)."""

    def __getattr__(self, name: str):
        if hasattr(torch, name):
            return getattr(torch, name)
        if hasattr(torch.Tensor, name):
            return getattr(torch.Tensor, name)
        raise AttributeError(f"torch.{name}")


_NAMESPACE = {
    "torch": _TorchNamespace(), "Tensor": torch.Tensor, "ops": torch.ops,
    "annotate": lambda _type, value: value, "uninitialized": lambda _type: None,
    "Optional": typing.Optional, "List": list, "Dict": dict, "Tuple": tuple,
    "NoneType": type(None), "Device": torch.device, "number": float,
}


class _Proxy:
    """Stands in for a ScriptModule on the path to the Grad-CAM layer: its methods run as
    Python (from their TorchScript code); the next module on the path is proxied in turn and the
    layer itself is replaced by the hookable tap."""

    def __init__(self, module, path: list[str], tap: _Tap) -> None:
        self._module, self._path, self._tap = module, path, tap
        self._methods: dict[str, object] = {}

    def __getattr__(self, name: str):
        if name.startswith("_") and name in ("_module", "_path", "_tap", "_methods"):
            raise AttributeError(name)
        if self._path and name == self._path[0]:
            child = getattr(self._module, name)
            if len(self._path) == 1:
                return _Callable(self._tap)
            return _Proxy(child, self._path[1:], self._tap)
        if name in self._methods:
            return self._methods[name]
        names = self._module._c._method_names() if hasattr(self._module, "_c") else []
        if name in names:
            fn = _compile_method(self._module, name)
            bound = functools.partial(fn, self)
            self._methods[name] = bound
            return bound
        return getattr(self._module, name)

    def __call__(self, *args):
        return self.forward(*args)


class _Callable:
    """Object with ``.forward`` (as the printed code calls submodules) that calls the tap."""

    def __init__(self, tap: _Tap) -> None:
        self._tap = tap

    def forward(self, *args):
        return self._tap(*args)

    __call__ = forward


def _compile_method(module, name: str):
    try:
        code = getattr(module, name).code
    except Exception as exc:
        raise ModelError(f"cannot read the TorchScript code of method {name!r} ({exc})") from None
    namespace = dict(_NAMESPACE)
    # annotations (TorchScript types such as __torch__.x.Y) stay unevaluated strings
    source = "from __future__ import annotations\n" + code
    try:
        exec(compile(source, f"<torchscript {name}>", "exec", dont_inherit=True), namespace)
    except SyntaxError as exc:
        raise ModelError(f"the TorchScript code of {name!r} is not valid Python ({exc.msg})"
                         ) from None
    return namespace[name]


def _pythonise(model, path: list[str], tap: _Tap):
    """A Python callable running ``model.forward`` with the layer at ``path`` tapped."""
    if not isinstance(model, torch.jit.ScriptModule):
        raise ModelError("internal: _pythonise expects a ScriptModule")
    proxy = _Proxy(model, path, tap)

    def forward(x):
        tap.called = False
        try:
            return proxy.forward(x)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"Grad-CAM on layer {'.'.join(path)!r}: the TorchScript code on the path to it "
                f"cannot run as Python ({type(exc).__name__}: {exc}); choose a top-level layer "
                "or provide an eager model") from None

    return forward


def load_classifier(path_or_dir, layer: str | None = None, lesion_index: int | None = None, *,
                    channels: int | None = None, image_size: int | None = None,
                    device: str | torch.device = "cpu") -> Classifier:
    """Load a lesion classifier for explanation (see the module docstring).

    Args:
        path_or_dir: a MammoNet folder, a TorchScript file, an ``nn.Module`` or a
            :class:`Classifier` (returned as is).
        layer: Grad-CAM layer name (dotted). MammoNet: default its last stage; others: needed
            for Grad-CAM only.
        lesion_index: output index of the lesion class (user models; see module docstring).
        channels: input channels of a user model (default 1); MammoNet: always 1.
        image_size: resize side for a user model (default: keep the image size); MammoNet: from
            its config.
        device: where the model runs.

    Raises:
        ModelError: the path is missing or not a loadable model, or the layer is unknown.
    """
    if isinstance(path_or_dir, Classifier):
        return path_or_dir
    if channels is not None and channels not in (1, 3):
        raise ModelError(f"channels {channels}: expected 1 or 3")
    if isinstance(path_or_dir, nn.Module):
        model = path_or_dir.to(device).eval()
        if isinstance(model, MammoNet):
            return Classifier(model, kind="mammonet", layer=layer, lesion_index=None, channels=1,
                              image_size=model.image_size, source="MammoNet (in memory)")
        kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "module"
        return Classifier(model, kind=kind, layer=layer, lesion_index=lesion_index,
                          channels=channels or 1, image_size=image_size,
                          source=f"{type(model).__name__} (in memory)")
    path = Path(path_or_dir)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ModelError(f"{path}: not a MammoNet folder ({CONFIG_NAME} missing); give a "
                             "MammoNet folder or a TorchScript file")
        if lesion_index not in (None, 0):
            raise ModelError("lesion_index applies to TorchScript models, not MammoNet")
        model = MammoNet.from_pretrained(path, device=device)
        return Classifier(model, kind="mammonet", layer=layer, lesion_index=None, channels=1,
                          image_size=model.image_size, source=str(path))
    if not path.is_file():
        raise ModelError(f"{path}: no such classifier file or folder")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
            model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: not a TorchScript file ({first[:200]})") from None
    model.eval()
    return Classifier(model, kind="torchscript", layer=layer, lesion_index=lesion_index,
                      channels=channels or 1, image_size=image_size, source=str(path))
