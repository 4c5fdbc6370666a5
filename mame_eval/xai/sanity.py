"""Model-randomisation sanity check of attribution maps (Adebayo et al. 2018, "Sanity Checks
for Saliency Maps", NeurIPS).

An explanation that explains the *model* must change when the model's learned weights are
destroyed. The cascading randomisation test re-initialises the classifier's layers from the
top (the lesion head) downward, cumulatively — step 1 randomises the head, step 2 the head and
the last backbone stage, …, the last step every learned layer — and compares each method's map
of the randomised model with its map of the trained model, image by image:

* **Spearman rank correlation** of the absolute maps (``|map|``, flattened; Adebayo et al.
  compare absolute maps because the sign of some methods' maps is arbitrary). A map with no
  rank information (constant) has correlation 0 with anything.
* **SSIM** of the absolute maps, each min–max normalised to [0, 1] (``pytorch_msssim.ssim``,
  11-px Gaussian window, data range 1; only when the map side is ≥ 11 px, else None).

A method whose maps stay similar after *full* randomisation reflects the input (edges, the
bright lesion), not what the model learned. **Verdict:** a method *fails the
model-randomisation check* when the mean Spearman ρ after full randomisation exceeds
:data:`RHO_THRESHOLD` = 0.5 (at that level the randomised model's map still orders pixels
much like the trained model's; Adebayo et al. report ρ near 0 for methods that pass, and
rank correlations that stay high for input-driven methods such as Guided Backprop).

Layer groups (:func:`randomization_layers`), top down:

* MammoNet: ``lesion_head``, then the backbone stages from the last to the first, then the
  stem (the attribute and lesion-map heads do not feed the lesion logit and are left alone);
* any other eager ``nn.Module`` (or TorchScript module): every sub-module that owns parameters,
  in reverse registration order.

Re-initialisation uses the module's own ``reset_parameters()`` (PyTorch's default
initialisation, the one MammoNet is trained from; BatchNorm: weight 1, bias 0, running
statistics 0/1). A module without it (TorchScript) gets each parameter redrawn from a normal
with the trained tensor's mean and standard deviation. Every step is seeded and works on a
**deep copy**: the classifier passed in is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from mame_eval.cad.classifier import Classifier
from mame_eval.cad.model import MammoNet
from mame_eval.errors import InputError, ModelError

__all__ = [
    "RHO_THRESHOLD",
    "cascading_randomizations",
    "fails_check",
    "map_similarity",
    "randomization_curve",
    "randomization_layers",
    "randomization_maps",
    "randomize",
]

#: mean Spearman ρ after full randomisation above which a method fails the check
RHO_THRESHOLD = 0.5
#: SSIM needs at least this map side (the Gaussian window)
_SSIM_WINDOW = 11


def randomization_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Layer groups of ``model`` in randomisation order (top down): ``[(label, [module
    names])]``; see the module docstring."""
    if isinstance(model, MammoNet):
        stages = [name for name, _ in model.features.named_children()]
        return [("lesion_head", ["lesion_head"])] + [
            (name, [f"features.{name}"]) for name in reversed(stages)]
    owners = [name for name, m in model.named_modules()
              if name and any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise ModelError(f"{type(model).__name__}: no layer with parameters to randomise")
    return [(name, [name]) for name in reversed(owners)]


def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    """Re-initialise every parameterised sub-module of ``module`` (in place)."""
    for sub in module.modules():
        own = list(sub.parameters(recurse=False))
        if not own and not isinstance(sub, nn.modules.batchnorm._NormBase):
            continue
        if hasattr(sub, "reset_parameters") and not isinstance(sub, torch.jit.ScriptModule):
            # reset_parameters draws from the global RNG: seed it locally
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                sub.reset_parameters()
            continue
        with torch.no_grad():
            for p in own:
                mean = float(p.mean()) if p.numel() > 1 else 0.0
                std = float(p.std()) if p.numel() > 1 else 1.0
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                p.copy_((mean + (std if std > 0 else 0.05) * noise).to(p.dtype))


def _submodule(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise ModelError(f"no module {name!r} in {type(model).__name__}")
    return modules[name]


def _rewrap(classifier: Classifier, model: nn.Module, label: str) -> Classifier:
    return Classifier(model, kind=classifier.kind, layer=classifier.layer_name,
                      lesion_index=classifier.lesion_index, channels=classifier.channels,
                      image_size=classifier.image_size,
                      source=f"{classifier.source} (randomised down to {label})")


def randomize(classifier: Classifier, depth: int, seed: int = 0) -> Classifier:
    """A copy of ``classifier`` with its top ``depth`` layer groups re-initialised
    (cascading: the same draws as step ``depth`` of :func:`cascading_randomizations`)."""
    last = None
    for step, _, clf in cascading_randomizations(classifier, seed=seed):
        if step == depth:
            return clf
        last = step
    raise InputError(f"depth {depth}: expected 1 … {last}")


def cascading_randomizations(classifier: Classifier, seed: int = 0
                             ) -> Iterator[tuple[int, str, Classifier]]:
    """Yield ``(depth, label, randomised classifier)`` for depth 1 … L (cumulative, top
    down); ``label`` is the lowest layer group randomised so far. The input is deep-copied
    once; each yielded classifier is its own copy (keep several at once if needed)."""
    if not isinstance(classifier, Classifier):
        raise InputError("cascading_randomizations needs a Classifier (load_classifier)")
    try:
        model = copy.deepcopy(classifier.model)
    except Exception as exc:  # a model that cannot be copied must not be modified in place
        raise ModelError(f"{classifier.source or 'classifier'}: cannot be copied for the "
                         f"randomisation check ({type(exc).__name__}: {exc})") from None
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    for depth, (label, names) in enumerate(randomization_layers(model), start=1):
        for name in names:
            _reinit(_submodule(model, name), gen)
        yield depth, label, _rewrap(classifier, copy.deepcopy(model), label)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 0.0  # a constant map has no ranking to agree with
    return float(np.clip(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb), -1, 1))


def _unit(a: np.ndarray) -> np.ndarray:
    low, high = a.min(), a.max()
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def map_similarity(original: np.ndarray, randomized: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image similarity of two stacks of maps ``(N, H, W)``.

    Returns ``{"spearman": (N,), "ssim": (N,) or None}``: Spearman ρ of ``|map|`` and SSIM of
    the min–max-normalised ``|map|`` (None when ``min(H, W) < 11``), see the module docstring.
    """
    a = np.abs(np.asarray(original, dtype=np.float64))
    b = np.abs(np.asarray(randomized, dtype=np.float64))
    if a.ndim != 3 or a.shape != b.shape:
        raise InputError(f"map stacks must both be (N, H, W); got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("maps contain NaN or infinite values")
    rho = np.array([_spearman(x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)])
    ssim = None
    if min(a.shape[1:]) >= _SSIM_WINDOW:
        from pytorch_msssim import ssim as _ssim

        ua = torch.from_numpy(np.stack([_unit(x) for x in a])[:, None]).float()
        ub = torch.from_numpy(np.stack([_unit(y) for y in b])[:, None]).float()
        ssim = _ssim(ua, ub, data_range=1.0, size_average=False,
                     win_size=_SSIM_WINDOW).double().numpy()
    return {"spearman": rho, "ssim": ssim}


def fails_check(mean_rho_full: float | None, threshold: float = RHO_THRESHOLD) -> bool:
    """True when the mean Spearman ρ after full randomisation exceeds ``threshold``."""
    return mean_rho_full is not None and bool(mean_rho_full > threshold)


MapFunction = Callable[[Classifier, torch.Tensor], np.ndarray]


def randomization_maps(classifier: Classifier, x: torch.Tensor,
                       methods: dict[str, MapFunction], seed: int = 0, batch_size: int = 8
                       ) -> Iterator[tuple[int, str, dict[str, np.ndarray]]]:
    """Yield ``(depth, label, {method: maps (N, H, W)})`` for the trained model (depth 0,
    label ``"none (trained model)"``) and then each cascading randomisation step.

    Args:
        classifier: the trained classifier (never modified).
        x: model inputs ``(N, C, S, S)`` (as :meth:`Classifier.prepare` makes them).
        methods: ``{name: f(classifier, x_batch) -> (n, S, S) array}``, e.g.
            ``lambda c, xb: attribute(c, xb, "gradcam")``.
        seed: seed of the re-initialisation.
        batch_size: images per call of a method.
    """
    if not methods:
        raise InputError("randomization_maps needs at least one method")

    def maps_of(clf: Classifier) -> dict[str, np.ndarray]:
        return {name: np.concatenate([np.asarray(fn(clf, x[b:b + batch_size]))
                                      for b in range(0, len(x), batch_size)])
                for name, fn in methods.items()}

    yield 0, "none (trained model)", maps_of(classifier)
    for depth, label, clf in cascading_randomizations(classifier, seed=seed):
        yield depth, label, maps_of(clf)


def randomization_curve(classifier: Classifier, x: torch.Tensor,
                        methods: dict[str, MapFunction], seed: int = 0, batch_size: int = 8
                        ) -> list[dict]:
    """The similarity curve: ``[{"method", "depth", "layer", "spearman": (N,), "ssim": (N,)
    or None}]`` of each method's randomised maps against its trained-model maps, depth 1 … L
    (see :func:`map_similarity`)."""
    out: list[dict] = []
    original: dict[str, np.ndarray] = {}
    for depth, label, maps in randomization_maps(classifier, x, methods, seed, batch_size):
        if depth == 0:
            original = maps
            continue
        for name in methods:
            sim = map_similarity(original[name], maps[name])
            out.append({"method": name, "depth": depth, "layer": label, **sim})
    return out
