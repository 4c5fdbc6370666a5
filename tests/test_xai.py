"""Captum attributions for MammoNet and user TorchScript classifiers.

References are computed independently: by hand for linear models (saliency = |w|, occlusion =
the drop of a linear score), and with plain autograd for Grad-CAM.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mame_eval.cad.classifier import load_classifier
from mame_eval.cad.model import MammoNet
from mame_eval.errors import InputError, ModelError
from mame_eval.xai.attribution import attribute, gradcam, occlusion, saliency

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class Tiny(nn.Module):
    """A user's two-class classifier with a nested Grad-CAM layer ``body.0``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h.mean((2, 3)) + h.amax((2, 3)))


class Linear(nn.Module):
    """score = Σ w ⊙ x, one logit."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum((1, 2, 3))


def _script(module: nn.Module, path, trace_input=None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(module, trace_input) if trace_input is not None \
            else torch.jit.script(module)
        torch.jit.save(scripted, str(path))
    return str(path)


@pytest.fixture(scope="module")
def mammonet():
    torch.manual_seed(0)
    return load_classifier(MammoNet(image_size=32, width=4, blocks=[1, 1]))


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_mammonet_maps_are_finite_and_image_sized(mammonet, method):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = attribute(mammonet, x, method)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    if method in ("gradcam", "saliency"):
        assert (maps >= 0).all()
    assert np.abs(maps).sum() > 0


def test_noise_tunnel_is_seeded_and_finite(mammonet):
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    nt = {"samples": 3, "stdev": 0.05, "seed": 7}
    a = saliency(mammonet, x, noise_tunnel=nt)
    b = saliency(mammonet, x, noise_tunnel=nt)
    assert a.shape == (2, 32, 32) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, saliency(mammonet, x))
    g = gradcam(mammonet, x, noise_tunnel=nt)
    assert g.shape == (2, 32, 32) and np.isfinite(g).all()


def _reference_gradcam(model: Tiny, x: torch.Tensor, index: int) -> np.ndarray:
    """Grad-CAM by hand: α_k = spatial mean of ∂y/∂A_k, map = ReLU(Σ_k α_k A_k)."""
    a = model.body[0](x)  # the layer "body.0" (conv, before the ReLU)
    h = torch.relu(a)
    y = model.head(h.mean((2, 3)) + h.amax((2, 3)))[:, index]
    (grad,) = torch.autograd.grad(y.sum(), a)
    alpha = grad.mean((2, 3), keepdim=True)
    return torch.relu((alpha * a).sum(1)).detach().numpy()


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_gradcam_matches_autograd_reference(tmp_path, how):
    torch.manual_seed(3)
    model = Tiny().eval()
    x = torch.rand(2, 1, 12, 12)
    path = _script(model, tmp_path / "tiny.pt", x if how == "trace" else None)
    clf = load_classifier(path, layer="body.0", lesion_index=1)
    maps = gradcam(clf, x)
    assert maps.shape == (2, 12, 12) and np.isfinite(maps).all()
    np.testing.assert_allclose(maps, _reference_gradcam(model, x, 1), rtol=1e-4, atol=1e-6)
    # the lesion score is the softmax probability of class 1
    expected = torch.softmax(model(x), 1)[:, 1]
    torch.testing.assert_close(clf.score(x), expected.detach())
    for method in ("saliency", "occlusion"):
        m = attribute(clf, x, method, **({"window": 3, "stride": 3}
                                           if method == "occlusion" else {}))
        assert m.shape == (2, 12, 12) and np.isfinite(m).all()


def test_torchscript_layer_errors(tmp_path):
    path = _script(Tiny(), tmp_path / "tiny.pt")
    with pytest.raises(ModelError, match="layer 'nope' not found"):
        load_classifier(path, layer="nope")
    clf = load_classifier(path)  # no layer: saliency works, Grad-CAM explains what is missing
    assert saliency(clf, torch.rand(1, 1, 8, 8)).shape == (1, 8, 8)
    with pytest.raises(ModelError, match="Grad-CAM needs a layer"):
        gradcam(clf, torch.rand(1, 1, 8, 8))
    with pytest.raises(ModelError, match="not a TorchScript file"):
        (tmp_path / "junk.pt").write_bytes(b"not a model")
        load_classifier(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="no such classifier"):
        load_classifier(tmp_path / "missing.pt")


def test_saliency_of_a_linear_model_is_abs_weight(tmp_path):
    w = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(4))
    path = _script(Linear(w), tmp_path / "linear.pt")
    clf = load_classifier(path, channels=3)
    x = torch.rand(2, 3, 6, 5)
    expected = w.abs().amax(0).numpy()
    maps = saliency(clf, x)
    np.testing.assert_allclose(maps[0], expected, rtol=1e-6)
    np.testing.assert_allclose(maps[1], expected, rtol=1e-6)


def _occlusion_reference(w: np.ndarray, x: np.ndarray, window: int, stride: int,
                         baseline: float) -> np.ndarray:
    """Brute force: each window's score drop, averaged over the windows covering a pixel."""
    h, wd = x.shape
    total = np.zeros((h, wd))
    count = np.zeros((h, wd))
    base = (w * x).sum()
    for top in range(0, h - window + 1, stride):
        for left in range(0, wd - window + 1, stride):
            occluded = x.copy()
            occluded[top:top + window, left:left + window] = baseline
            drop = base - (w * occluded).sum()
            total[top:top + window, left:left + window] += drop
            count[top:top + window, left:left + window] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


@pytest.mark.parametrize("window,stride,ppe", [(2, 2, 1), (3, 1, 7), (4, 2, 64)])
def test_occlusion_window_and_stride_against_brute_force(tmp_path, window, stride, ppe):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(1, 8, 8, generator=gen)
    x = torch.rand(1, 1, 8, 8, generator=gen)
    clf = load_classifier(Linear(w))
    maps = occlusion(clf, x, window=window, stride=stride, baseline=0.25,
                     perturbations_per_eval=ppe)
    expected = _occlusion_reference(w[0].numpy(), x[0, 0].numpy(), window, stride, 0.25)
    np.testing.assert_allclose(maps[0], expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments(mammonet):
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(InputError, match="window"):
        occlusion(mammonet, x, window=64)
    with pytest.raises(InputError, match="unknown attribution method"):
        attribute(mammonet, x, "lime")
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        saliency(mammonet, x[0])


def test_default_occlusion_window_is_no_larger_than_a_phantom_mass():
    from mame_eval.xai.attribution import default_occlusion_window

    # phantom masses are ~8 px across at 128 px input
    assert default_occlusion_window(128) == (8, 4)
    assert default_occlusion_window(64) == (4, 2)
    assert default_occlusion_window(256) == (16, 8)
    assert default_occlusion_window(16) == (2, 1)


# --------------------------------------------------------------------------------------------
# model-randomisation sanity check (Adebayo et al. 2018)
# --------------------------------------------------------------------------------------------


def _blobs(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Dark textured background with one bright disc per image (a phantom-like lesion)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = 0.2 + 0.05 * torch.rand(n, 1, size, size, generator=g)
    for i in range(n):
        cy, cx = (torch.randint(12, size - 12, (2,), generator=g)).tolist()
        out[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 0.9
    return out


@pytest.fixture(scope="module")
def shipped():
    from mame_eval.models.loading import EMBEDDED_MAMMONET

    return load_classifier(EMBEDDED_MAMMONET)


def test_cascading_randomisation_copies_and_changes_the_weights(shipped):
    from mame_eval.xai.sanity import cascading_randomizations, randomization_layers

    before = {k: v.clone() for k, v in shipped.model.state_dict().items()}
    layers = randomization_layers(shipped.model)
    assert [label for label, _ in layers] == ["lesion_head", "stage2", "stage1", "stem"]
    steps = list(cascading_randomizations(shipped, seed=1))
    assert [d for d, _, _ in steps] == [1, 2, 3, 4]
    for depth, label, clf in steps:
        assert clf.model is not shipped.model
        state = clf.model.state_dict()
        randomised = [names[0] for _, names in layers[:depth]]
        for key, value in before.items():
            if not value.is_floating_point() or key.endswith("num_batches_tracked"):
                continue
            hit = any(key.startswith(p + ".") for p in randomised)
            changed = not torch.equal(state[key], value)
            if hit and "running" not in key and value.numel() > 1:
                assert changed, (label, key)
            if not hit:
                assert not changed, (label, key)  # layers below stay trained
    # the trained model is untouched (deep copies only)
    for key, value in shipped.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # seeded: the same seed gives the same randomised weights
    again = list(cascading_randomizations(shipped, seed=1))[-1][2].model.state_dict()
    final = steps[-1][2].model.state_dict()
    assert all(torch.equal(again[k], final[k]) for k in final)


def test_gradcam_decorrelates_and_an_input_copy_fails(shipped):
    from mame_eval.xai.sanity import RHO_THRESHOLD, fails_check, randomization_curve

    x = _blobs(4, shipped.image_size, seed=2)
    curve = randomization_curve(shipped, x, {
        "gradcam": lambda c, xb: attribute(c, xb, "gradcam"),
        # a degenerate "explanation": the input image itself (an edge detector would do too)
        "input": lambda c, xb: xb[:, 0].numpy(),
    }, seed=0)
    full = max(r["depth"] for r in curve)
    rho = {r["method"]: float(np.mean(r["spearman"])) for r in curve if r["depth"] == full}
    ssim = {r["method"]: float(np.mean(r["ssim"])) for r in curve if r["depth"] == full}
    assert rho["input"] == pytest.approx(1.0) and ssim["input"] == pytest.approx(1.0)
    assert fails_check(rho["input"]) is True
    assert rho["gradcam"] < 0.3 and fails_check(rho["gradcam"]) is False
    assert RHO_THRESHOLD == 0.5


def test_map_similarity_references():
    from scipy.stats import spearmanr

    from mame_eval.xai.sanity import map_similarity

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 16, 16))
    b = a + rng.normal(scale=2.0, size=a.shape)
    sim = map_similarity(a, b)
    for i in range(3):  # Spearman of the absolute maps, scipy as the reference
        ref = spearmanr(np.abs(a[i]).ravel(), np.abs(b[i]).ravel()).statistic
        assert sim["spearman"][i] == pytest.approx(ref, abs=1e-12)
    same = map_similarity(a, -a)  # absolute maps: a sign flip is the same map
    np.testing.assert_allclose(same["spearman"], 1.0)
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-6)
    const = map_similarity(a, np.zeros_like(a))
    np.testing.assert_array_equal(const["spearman"], 0.0)  # no ranking: no agreement
    assert map_similarity(a[:, :8, :8], b[:, :8, :8])["ssim"] is None  # below the window
    with pytest.raises(InputError, match="N, H, W"):
        map_similarity(a, b[:2])


@pytest.mark.parametrize("scripted", [False, True])
def test_randomisation_of_user_models(tmp_path, scripted):
    """Eager and TorchScript user models: every parameterised layer, top down; the loaded
    model is never modified."""
    from mame_eval.xai.sanity import randomization_curve, randomization_layers

    torch.manual_seed(0)
    module = Tiny()
    src = _script(module, tmp_path / "tiny.pt") if scripted else module
    clf = load_classifier(src, layer="body.0")
    assert [label for label, _ in randomization_layers(clf.model)] == ["head", "body.0"]
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    curve = randomization_curve(clf, x, {"saliency": lambda c, xb: saliency(c, xb)}, seed=0)
    assert [r["depth"] for r in curve] == [1, 2]
    assert all(np.all(np.abs(r["spearman"]) <= 1) for r in curve)
    assert all(torch.equal(v, before[k]) for k, v in clf.model.state_dict().items())
