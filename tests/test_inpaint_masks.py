"""Lesion masks, the Poisson blend, the edge-step measurement and mask augmentation (issue 17)."""

import math

import numpy as np
import pytest
from PIL import Image

from mame_eval.errors import ConfigError, InputError
from mame_eval.generation.inpaint import (
    blend,
    changed_region,
    composite,
    feather_alpha,
    harmonic_fill,
    inpaint,
    poisson_margin,
    poisson_match,
)
from mame_eval.generation.masks import (
    blob_mask,
    box_to_mask,
    ellipse_mask,
    mask_box,
    random_lesion_mask,
    shape_mask,
)
from mame_eval.generation.seam import edge_step, gradient_magnitude

pytest_plugins = ["conftest_models"]
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def breast_image(h=96, w=80, seed=0, level=140.0, texture=12.0):
    """A half-ellipse 'breast' on black with smooth random texture (uint8 RGB)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[:h, :w]
    breast = ((gy - h / 2) / (0.45 * h)) ** 2 + (gx / (0.9 * w)) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=(h, w)), 2.0)
    gray = np.where(breast, level + texture * noise / noise.std(), 0.0)
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


# --------------------------------------------------------------------------- shapes


def test_ellipse_matches_the_equation_and_lies_in_its_box():
    box = (10.0, 20.0, 31.0, 35.0)
    mask = ellipse_mask(box, 48, 40)
    cx, cy, ax, ay = 20.5, 27.5, 10.5, 7.5
    for y in range(48):
        for x in range(40):
            inside = ((x + 0.5 - cx) / ax) ** 2 + ((y + 0.5 - cy) / ay) ** 2 <= 1
            assert mask[y, x] == inside
    assert box_to_mask(box, 48, 40)[mask].all()  # wholly inside the box
    # An ellipse covers π/4 of its box.
    assert abs(mask.sum() / box_to_mask(box, 48, 40).sum() - math.pi / 4) < 0.05


def test_blob_is_lesion_shaped_deterministic_and_inside_its_box():
    box = (8.0, 8.0, 56.0, 48.0)
    square = box_to_mask(box, 64, 64)
    masks = [blob_mask(box, 64, 64, seed) for seed in range(6)]
    for mask in masks:
        assert square[mask].all()
        ys, xs = np.nonzero(mask)
        assert mask[28, 32]  # contains the centre
        # reaches the inscribed ellipse (its largest radius is 1 in the box's frame)
        radius = np.hypot((xs + 0.5 - 32) / 24, (ys + 0.5 - 28) / 20)
        assert 0.9 < radius.max() <= 1.0
        # not a box: clearly less than the full box, yet a good part of it
        assert 0.35 < mask.sum() / square.sum() < 0.85
    np.testing.assert_array_equal(blob_mask(box, 64, 64, 3), masks[3])
    assert not np.array_equal(masks[0], masks[1])
    # roughness 0 is the inscribed ellipse
    np.testing.assert_array_equal(blob_mask(box, 64, 64, 1, roughness=0.0),
                                  ellipse_mask(box, 64, 64))


def test_shapes_reject_bad_boxes_and_names():
    with pytest.raises(InputError, match="x0 < x1"):
        ellipse_mask((20, 5, 10, 9), 32, 32)
    with pytest.raises(InputError, match="≤ 32"):
        shape_mask("blob", (0, 0, 40, 10), 32, 32)
    with pytest.raises(InputError, match="box, ellipse, blob"):
        shape_mask("star", (0, 0, 10, 10), 32, 32)
    assert mask_box(box_to_mask((3, 4, 9, 12), 32, 32)) == (3.0, 4.0, 9.0, 12.0)
    with pytest.raises(InputError, match="empty"):
        mask_box(np.zeros((4, 4), bool))


def test_random_lesion_masks_cover_the_lesion_and_vary_in_size_and_shape():
    lesion = (30.0, 40.0, 38.0, 48.0)
    covered = ellipse_mask(lesion, 128, 128)
    rng = np.random.default_rng(0)
    sizes, shapes = [], set()
    for _ in range(60):
        mask, shape = random_lesion_mask(lesion, 128, 128, rng, scale=(1.0, 2.5))
        assert mask[covered].all()
        shapes.add(shape)
        x0, y0, x1, y1 = mask_box(mask)
        sizes.append(max(x1 - x0, y1 - y0))
    assert shapes == {"box", "ellipse", "blob"}
    assert min(sizes) <= 12 and max(sizes) >= 18  # 8-px lesion, masks up to ~2.5x
    # clipped at the image border, still covering the lesion
    edge = (0.0, 0.0, 6.0, 6.0)
    for _ in range(10):
        mask, _ = random_lesion_mask(edge, 32, 32, rng)
        assert mask[ellipse_mask(edge, 32, 32)].all() and mask.shape == (32, 32)
    with pytest.raises(InputError, match="scale"):
        random_lesion_mask(lesion, 128, 128, rng, scale=(0.5, 2.0))


# --------------------------------------------------------------------------- blending


def test_harmonic_fill_reproduces_harmonic_fields_exactly():
    h, w = 40, 50
    gy, gx = np.mgrid[:h, :w].astype(float)
    region = blob_mask((10, 8, 35, 30), h, w, 3)
    for field in (3 + 0.5 * gx - 0.25 * gy, gx * gy, gx ** 2 - gy ** 2):  # Δ = 0 exactly
        given = field.copy()
        given[region] = 99.0  # unknown inside
        np.testing.assert_allclose(harmonic_fill(given, region), field, atol=1e-9)
    two = np.stack([gx, 2 * gy], axis=-1)
    np.testing.assert_allclose(harmonic_fill(two, region), two, atol=1e-9)
    # no boundary at all: the mean
    assert np.allclose(harmonic_fill(np.full((5, 5), 7.0), np.ones((5, 5), bool)), 7.0)


def test_harmonic_fill_solves_laplace_with_neumann_image_borders():
    """Against an independent solver: Jacobi iteration of the same discrete problem."""
    rng = np.random.default_rng(1)
    h, w = 16, 12
    region = np.zeros((h, w), bool)
    region[0:9, 0:6] = True  # touches the top and left image borders
    field = rng.normal(size=(h, w))
    c = field.copy()
    for _ in range(5000):
        padded = np.pad(c, 1, mode="edge")  # a missing neighbour = the pixel itself
        avg = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
        c = np.where(region, avg, field)
    np.testing.assert_allclose(harmonic_fill(field, region), c, atol=1e-6)


def test_poisson_blend_removes_an_offset_and_keeps_the_lesion():
    original = breast_image()
    mask = ellipse_mask((30, 40, 46, 56), 96, 80)
    lesion = np.zeros(original.shape[:2])
    lesion[np.hypot(*np.mgrid[-48:48, -40:40] - np.array([0, -2])[:, None, None]) < 4] = 60
    # the model's output: the tissue 25 levels brighter everywhere, plus a bright mass
    generated = np.clip(original + 25.0 + lesion[..., None], 0, 255).astype(np.uint8)
    plain = blend(original, generated, mask, 1, "feather")
    seamless = blend(original, generated, mask, 1, "poisson")
    far = ~changed_region(mask, 1)
    assert far.sum() < (~(feather_alpha(mask, 1) > 0)).sum()  # the ring is matched too
    np.testing.assert_array_equal(seamless[far], original[far])  # outside: untouched
    inner = np.zeros_like(mask)
    inner[46:50, 36:42] = True  # the mass centre
    # the offset is gone (the mass keeps its contrast over the tissue)
    rim = mask & ~ellipse_mask((33, 43, 43, 53), 96, 80)
    assert abs(seamless[rim].astype(float).mean() - original[rim].astype(float).mean()) < 4
    assert abs(plain[rim].astype(float).mean() - original[rim].astype(float).mean()) > 20
    assert (seamless[inner].astype(float) - original[inner]).mean() > 40
    # and the seam measurement sees it
    assert edge_step(plain, mask).ratio > 2 * edge_step(seamless, mask).ratio
    assert edge_step(seamless, mask).ratio < 1.5
    # a constant offset only: the Poisson blend gives the original back
    shifted = np.clip(original.astype(int) + 30, 0, 255).astype(np.uint8)
    inside_tissue = mask & (original[..., 0] < 200)
    np.testing.assert_array_equal(blend(original, shifted, mask, 2)[inside_tissue],
                                  original[inside_tissue])
    with pytest.raises(InputError, match="poisson, feather"):
        blend(original, generated, mask, 1, "alpha")


def test_the_tissue_ring_keeps_a_mass_that_fills_its_mask():
    """A model trained on tight lesion boxes draws a mass that fills its mask, and the VAE
    decoder spreads it a little past the outline; matching just outside the outline then
    subtracts the mass's own brightness, matching on a ring of tissue farther out keeps it."""
    from scipy import ndimage

    original = breast_image(seed=3)
    box = (30, 40, 46, 56)
    mask = box_to_mask(box, 96, 80)
    rng = np.random.default_rng(0)
    generated = original.astype(float) + rng.normal(0, 1.5, original.shape)  # the tissue again
    spill = ndimage.distance_transform_edt(~mask) <= 1.5  # the mass and its 1-px halo
    generated[spill] += 50
    generated = np.clip(np.round(generated), 0, 255).astype(np.uint8)
    lifted = {}
    for name, margin in (("outline", 0), ("ring", 3)):
        out = blend(original, generated, mask, 1, "poisson", margin=margin)
        lifted[name] = (out[mask].astype(float) - original[mask]).mean()
        region = changed_region(mask, 1, "poisson", margin)
        np.testing.assert_array_equal(out[~region], original[~region])
    assert lifted["ring"] > 40 and lifted["outline"] < 25, lifted
    # the seam, on the outline of the changed pixels, stays in tissue
    ring_out = blend(original, generated, mask, 1, "poisson", margin=3)
    assert edge_step(ring_out, changed_region(mask, 1, margin=3)).ratio < 1.5
    assert poisson_margin(128, 128) == 3 and poisson_margin(512, 512) == 13
    with pytest.raises(InputError, match="blend margin -1"):
        blend(original, generated, mask, 1, "poisson", margin=-1)


def test_poisson_match_is_the_plain_composite_when_nothing_differs_at_the_edge():
    original = breast_image(seed=2)
    mask = box_to_mask((30, 40, 46, 56), 96, 80)
    generated = original.copy()
    generated[mask] = 200  # differs only strictly inside the region
    region = feather_alpha(mask, 2) > 0
    matched = poisson_match(original, generated, region)
    # the boundary difference is zero, so the correction is zero
    np.testing.assert_allclose(matched, generated.astype(float), atol=1e-9)
    np.testing.assert_array_equal(composite(original, generated, feather_alpha(mask, 2)),
                                  blend(original, generated, mask, 2))


# --------------------------------------------------------------------------- the measurement


def test_gradient_magnitude_of_a_unit_ramp_is_one():
    ramp = np.tile(np.arange(40, dtype=np.uint8), (30, 1))
    grad = gradient_magnitude(ramp)
    np.testing.assert_allclose(grad[1:-1, 1:-1], 1.0)


def test_edge_step_ratio_rises_with_the_step_height():
    image = breast_image(seed=3)
    mask = box_to_mask((28, 36, 48, 60), 96, 80)
    ratios = []
    for step in (0, 10, 20, 40):
        stepped = image.astype(int)
        stepped[mask] += step
        ratios.append(edge_step(np.clip(stepped, 0, 255).astype(np.uint8), mask,
                                reference=image).ratio)
    assert ratios == sorted(ratios) and ratios[-1] > 3 * ratios[0]
    flat = edge_step(image, mask, reference=image)
    assert flat.reference_ratio == pytest.approx(flat.ratio)
    assert 0.5 < flat.ratio < 1.6  # ordinary tissue along the outline
    assert flat.n_band > 0 and flat.n_interior > flat.n_band
    with pytest.raises(InputError, match="empty"):
        edge_step(image, np.zeros((96, 80), bool))
    with pytest.raises(InputError, match="match"):
        edge_step(image, np.ones((10, 10), bool))


# --------------------------------------------------------------------------- inpaint / synth


def test_inpaint_with_an_ellipse_and_a_drawn_mask(prepared, inpaint_pipe, tmp_path):
    image = sorted((prepared / "healthy").glob("*.png"))[0]
    box = (20, 16, 40, 40)
    run = inpaint(None, image, tmp_path / "e", box=box, mask_shape="ellipse", n=1, steps=2,
                  pipe=inpaint_pipe, feather=1)
    used = png(tmp_path / "e" / "mask.png") > 0
    np.testing.assert_array_equal(used, ellipse_mask(box, 64, 64))
    row = run.rows[0]
    assert row["mask_shape"] == "ellipse" and row["blend"] == "poisson"
    drawn = np.zeros((64, 64), bool)
    drawn[10:20, 30:45] = True
    drawn[15:25, 40:50] = True
    run = inpaint(None, image, tmp_path / "d", mask_array=drawn, n=1, steps=2,
                  pipe=inpaint_pipe, blend_method="feather")
    np.testing.assert_array_equal(png(tmp_path / "d" / "mask.png") > 0, drawn)
    assert run.rows[0]["blend"] == "feather" and run.rows[0]["mask_shape"] is None
    with pytest.raises(InputError, match="exactly one"):
        inpaint(None, image, tmp_path / "x", box=box, mask_array=drawn, pipe=inpaint_pipe)
    with pytest.raises(InputError, match="must match"):
        inpaint(None, image, tmp_path / "x", mask_array=np.ones((8, 8), bool),
                pipe=inpaint_pipe)
    with pytest.raises(InputError, match="empty"):
        inpaint(None, image, tmp_path / "x", mask_array=np.zeros((64, 64), bool),
                pipe=inpaint_pipe)


def test_synthesize_with_shapes_and_a_drawn_mask(txt2img_pipe, inpaint_pipe, tmp_path):
    from mame_eval.generation import synthesize

    prompt = "a hologic mammogram in CC view with small area"
    run = synthesize(None, None, prompt, tmp_path / "b", n=2, steps=2, mask_shape="blob",
                     pipe=txt2img_pipe, inpaint_pipe=inpaint_pipe)
    for row in run.rows:
        mask = png(tmp_path / "b" / row["mask_file"]) > 0
        square = box_to_mask(row["box"], 32, 32)
        assert square[mask].all() and mask.sum() < square.sum()
        assert row["mask_shape"] == "blob" and row["blend"] == "poisson"
    drawn = np.zeros((32, 32), bool)
    drawn[8:14, 4:9] = True
    run = synthesize(None, None, prompt, tmp_path / "d", n=1, steps=2, mask=drawn,
                     laterality="R", pipe=txt2img_pipe, inpaint_pipe=inpaint_pipe)
    row = run.rows[0]
    np.testing.assert_array_equal(png(tmp_path / "d" / row["mask_file"]) > 0, drawn)
    assert row["box"] == [4.0, 8.0, 9.0, 14.0] and row["box_source"] == "drawn"
    with pytest.raises(InputError, match="not both"):
        synthesize(None, None, prompt, tmp_path / "x", box=(1, 1, 5, 5), mask=drawn,
                   pipe=txt2img_pipe, inpaint_pipe=inpaint_pipe)


# --------------------------------------------------------------------------- augmentation


def _tokenizer(tiny_inpaint):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_inpaint, subfolder="tokenizer")


def test_lesion_dataset_augments_masks_around_the_lesion(prepared, tiny_inpaint):
    from mame_eval.training.data import LesionDataset, MaskAugmentation

    tok = _tokenizer(tiny_inpaint)
    plain = LesionDataset(prepared, tok, 64)
    aug = LesionDataset(prepared, tok, 64, augmentation=MaskAugmentation(
        variants=3, healthy_fraction=0.25, seed=1))
    n = len(plain)
    assert aug.n_lesion == 3 * n and aug.n_healthy == round(3 * n / 3)
    assert len(aug) == aug.n_lesion + aug.n_healthy
    areas = set()
    for i in range(aug.n_lesion):
        item, tight = aug[i], plain[i // 3]
        lesion = tight["mask"][0].numpy() > 0
        mask = item["mask"][0].numpy() > 0
        assert mask[ellipse_mask(mask_box(lesion), 64, 64)].all()  # covers the lesion
        np.testing.assert_array_equal(item["pixel_values"], tight["pixel_values"])
        masked = item["masked_pixel_values"].numpy()
        assert (masked[:, mask] == 0).all()
        np.testing.assert_array_equal(masked[:, ~mask], item["pixel_values"].numpy()[:, ~mask])
        assert aug.source_key(i) == ("lesion", i // 3)
        areas.add(int(mask.sum()))
    assert len(areas) > n  # the variants differ
    empty = tok("", padding="max_length", max_length=tok.model_max_length,
                return_tensors="pt").input_ids[0]
    for i in range(aug.n_lesion, len(aug)):
        item = aug[i]
        assert item["mask"].sum() > 0 and (item["input_ids"] == empty).all()
        assert aug.source_key(i)[0] == "healthy"
    # the same item twice: the same mask (seeded by item), another seed: other masks
    np.testing.assert_array_equal(aug[1]["mask"], aug[1]["mask"])
    other = LesionDataset(prepared, tok, 64, augmentation=MaskAugmentation(variants=3, seed=2))
    assert any(not np.array_equal(other[i]["mask"], aug[i]["mask"]) for i in range(3 * n))
    with pytest.raises(IndexError):
        aug[len(aug)]


def test_mask_augmentation_config(tmp_path):
    from mame_eval.training import load_config

    cfg = tmp_path / "c.toml"
    base = ('pretrained_model = "tiny"\ndata_dir = "d"\noutput_dir = "o"\n'
            'max_train_steps = 2\n')
    cfg.write_text(base + '[mask_augmentation]\nvariants = 2\nscale = [1.0, 3.0]\n')
    config = load_config(cfg, task="inpaint")
    assert config.mask_augmentation.variants == 2
    assert tuple(config.mask_augmentation.scale) == (1.0, 3.0)
    cfg.write_text(base + '[mask_augmentation]\nscale = [2.0, 1.0]\n')
    with pytest.raises(ConfigError, match="scale"):
        load_config(cfg)
    cfg.write_text(base + '[mask_augmentation]\nshapes = ["star"]\n')
    with pytest.raises(ConfigError, match="shapes"):
        load_config(cfg)
    cfg.write_text(base + '[mask_augmentation]\nvariant = 2\n')
    with pytest.raises(ConfigError, match="variants"):
        load_config(cfg)


def test_train_inpaint_with_mask_augmentation_and_cached_latents(prepared, tiny_inpaint,
                                                                 tmp_path):
    from mame_eval.training import load_config, train_inpaint

    out = tmp_path / "aug"
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'pretrained_model = "{tiny_inpaint}"\nresolution = 32\ntrain_batch_size = 4\n'
        f'learning_rate = 1e-3\nreport_to = "none"\ndata_dir = "{prepared}"\n'
        f'output_dir = "{out}"\nmax_train_steps = 2\ncache_latents = true\n'
        'validation_inference_steps = 2\nnum_validation_images = 1\n'
        '[mask_augmentation]\nvariants = 2\nhealthy_fraction = 0.2\n')
    result = train_inpaint(load_config(cfg, task="inpaint"))
    assert result.global_step == 2 and all(math.isfinite(x) for x in result.losses)
    healthy = tmp_path / "h.toml"
    healthy.write_text(cfg.read_text().replace(f'"{tiny_inpaint}"', '"tiny"'))
    from mame_eval.training import train_healthy

    with pytest.raises(ConfigError, match="mask_augmentation"):
        train_healthy(load_config(healthy))


# --------------------------------------------------------------------------- size augmentation


def test_zoom_to_side_enlarges_the_lesion_to_the_drawn_size():
    from mame_eval.training.data import zoom_to_side

    rgb = np.full((64, 64, 3), 40.0, dtype=np.float32)
    box = (30.0, 20.0, 36.0, 24.0)  # a 6×4 px bright lesion
    rgb[20:24, 30:36] = 220.0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        target = np.random.default_rng(seed).uniform(10, 18)  # the draw zoom_to_side makes
        out, new = zoom_to_side(rgb, box, rng, (10.0, 18.0))
        assert out.shape == rgb.shape and out.dtype == np.float32
        x0, y0, x1, y1 = new
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        # the longer side becomes the target, the aspect ratio is kept
        assert max(x1 - x0, y1 - y0) == pytest.approx(target)
        assert (x1 - x0) / (y1 - y0) == pytest.approx(6 / 4)
        # the bright pixels are where the new box says (bilinear: a 1-px soft edge)
        bright = out[..., 0] > 130
        ys, xs = np.nonzero(bright)
        assert xs.min() >= math.floor(x0) - 1 and xs.max() <= math.ceil(x1)
        assert ys.min() >= math.floor(y0) - 1 and ys.max() <= math.ceil(y1)
        inner = box_to_mask((x0 + 1, y0 + 1, x1 - 1, y1 - 1), 64, 64)
        assert bright[inner].all()
    # a lesion already larger than any draw is left alone, pixel for pixel
    same, kept = zoom_to_side(rgb, box, np.random.default_rng(0), (2.0, 5.0))
    assert kept == box and same is rgb


def test_lesion_dataset_zooms_lesions_into_the_size_range(prepared, tiny_inpaint):
    from mame_eval.training.data import LesionDataset, MaskAugmentation

    tok = _tokenizer(tiny_inpaint)
    plain = LesionDataset(prepared, tok, 64)
    aug = LesionDataset(prepared, tok, 64, augmentation=MaskAugmentation(
        variants=2, shapes=["box"], scale=(1.0, 1.0), lesion_side=(12.0, 20.0),
        healthy_fraction=0.2, seed=3))
    keys = [aug.source_key(i) for i in range(aug.n_lesion)]
    assert len(set(keys)) == aug.n_lesion  # each zoomed variant has its own pixels
    for i in range(aug.n_lesion):
        item, tight = aug[i], plain[i // 2]
        mask = item["mask"][0].numpy() > 0
        x0, y0, x1, y1 = mask_box(mask)
        lesion = mask_box(tight["mask"][0].numpy() > 0)
        before = max(lesion[2] - lesion[0], lesion[3] - lesion[1])
        # a box mask at scale 1 is the (zoomed) lesion box, up to pixel-centre rounding
        assert max(x1 - x0, y1 - y0) >= min(12.0, before) - 1
        assert max(x1 - x0, y1 - y0) <= max(20.0, before) + 1
        masked = item["masked_pixel_values"].numpy()
        np.testing.assert_array_equal(masked[:, ~mask], item["pixel_values"].numpy()[:, ~mask])
        if before < 11:  # zoomed: other pixels than the prepared image
            assert not np.array_equal(item["pixel_values"], tight["pixel_values"])
    for i in range(aug.n_lesion, len(aug)):  # healthy items: masks of the zoomed sizes
        mask = aug[i]["mask"][0].numpy() > 0
        x0, y0, x1, y1 = mask_box(mask)
        assert 10 <= max(x1 - x0, y1 - y0) <= 22
    np.testing.assert_array_equal(aug[0]["pixel_values"], aug[0]["pixel_values"])


def test_lesion_side_config(tmp_path):
    from mame_eval.training import load_config

    cfg = tmp_path / "c.toml"
    base = ('pretrained_model = "tiny"\ndata_dir = "d"\noutput_dir = "o"\n'
            'max_train_steps = 2\n[mask_augmentation]\n')
    cfg.write_text(base + 'lesion_side = [8, 20]\n')
    assert tuple(load_config(cfg).mask_augmentation.lesion_side) == (8.0, 20.0)
    for bad in ("[20, 8]", "[0.5, 4]"):
        cfg.write_text(base + f'lesion_side = {bad}\n')
        with pytest.raises(ConfigError, match="lesion_side"):
            load_config(cfg)
