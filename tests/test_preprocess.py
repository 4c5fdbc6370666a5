import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mame_eval.data.preprocess import (
    Geometry,
    area_ratio,
    box_mask,
    breast_mask,
    breast_side,
    to_rgb,
)
from mame_eval.errors import DataError


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_paper_geometry_by_hand():
    # 1024 x 832 portrait: shorter side 832 -> 512, so 1024 -> 630.15 -> 630 rows; crop 59 top.
    g = Geometry(1024, 832, flip=False)
    assert g.resized == (630, 512)
    assert g.offset == (-59, 0)
    x0, y0, x1, y1 = g.apply_box((83.2, 200.0, 166.4, 300.0))
    assert (x0, x1) == pytest.approx((51.2, 102.4))
    assert y0 == pytest.approx(200 * 630 / 1024 - 59)
    assert y1 == pytest.approx(300 * 630 / 1024 - 59)


def test_flip_mirrors_boxes_about_the_width():
    g = Geometry(100, 100, flip=True, size=100)
    assert g.apply_box((10, 20, 30, 40)) == pytest.approx((70, 20, 90, 40))


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(120, 400), flip=st.booleans(), crop=st.sampled_from(["center", "pad"]),
    data=st.data(),
)
def test_box_follows_the_pixels(h, flip, crop, data):
    """A rectangle drawn in the image lands where apply_box says, whatever the geometry.

    Portrait images (like mammograms), boxes away from the top/bottom that a crop removes.
    """
    w = data.draw(st.integers(max(120, -(-2 * h // 3)), h))  # aspect up to 3:2 like FFDM
    bw, bh = data.draw(st.integers(20, w // 3)), data.draw(st.integers(20, h // 3))
    x0 = data.draw(st.integers(w // 6, w - bw - w // 6))
    y0 = data.draw(st.integers(h // 4, h - bh - h // 4))
    image = np.zeros((h, w), np.uint8)
    image[y0:y0 + bh, x0:x0 + bw] = 255
    g = Geometry(h, w, flip=flip, size=96, crop=crop)
    mapped = g.apply_box((x0, y0, x0 + bw, y0 + bh))
    assert g.box_inside(mapped)
    drawn = g.apply_image(image) >= 128
    # every edge of the resampled rectangle lies within one output pixel of the mapped box
    assert np.allclose(bbox(drawn), mapped, atol=1.0), (bbox(drawn), mapped)


def test_pad_keeps_the_whole_image_and_center_crops_it():
    image = np.full((300, 200), 200, np.uint8)
    padded = Geometry(300, 200, flip=False, size=150, crop="pad").apply_image(image)
    cropped = Geometry(300, 200, flip=False, size=150, crop="center").apply_image(image)
    assert padded.shape == cropped.shape == (150, 150)
    # pad: 300 -> 150 rows, 200 -> 100 cols, 25 columns of padding each side
    assert (padded[:, :24] == 0).all() and (padded[:, 26:124] == 200).all()
    assert (cropped == 200).all()


def test_box_leaving_the_crop_is_detected():
    g = Geometry(1024, 832, flip=False)
    assert not g.box_inside(g.apply_box((100, 5, 200, 60)))  # top rows are cropped away
    assert g.box_inside(g.apply_box((100, 300, 200, 400)))


def test_geometry_rejects_bad_input():
    with pytest.raises(DataError, match="crop mode"):
        Geometry(10, 10, flip=False, crop="zoom")
    with pytest.raises(DataError, match="built for"):
        Geometry(10, 10, flip=False, size=8).apply_image(np.zeros((5, 5), np.uint8))


def test_box_mask_uses_pixel_centres():
    m = box_mask((1.0, 2.0, 3.0, 4.0), 6)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert np.argwhere(m).tolist() == [[2, 1], [2, 2], [3, 1], [3, 2]]


def test_breast_mask_fills_holes_and_drops_labels():
    yy, xx = np.mgrid[:200, :160]
    breast = ((yy - 100) / 90.0) ** 2 + (xx / 120.0) ** 2 <= 1
    image = np.where(breast, 120, 0).astype(np.uint8)
    image[90:100, 40:50] = 3  # dark fatty lobule inside the breast: a hole
    image[5:15, 140:155] = 255  # burnt-in label, not connected
    rng = np.random.default_rng(0)
    image = np.clip(image + rng.integers(0, 5, image.shape), 0, 255).astype(np.uint8)
    mask = breast_mask(image)
    assert (mask == breast).mean() > 0.999
    assert area_ratio(mask) == pytest.approx(breast.mean(), abs=1e-3)
    assert breast_side(image) == "L"
    assert breast_side(image[:, ::-1]) == "R"


def test_empty_image_gives_empty_mask():
    assert not breast_mask(np.zeros((10, 10), np.uint8)).any()


def test_to_rgb_replicates_gray():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_rgb(gray)
    assert rgb.shape == (3, 4, 3) and all((rgb[..., c] == gray).all() for c in range(3))
