"""The playground end to end in a real browser: Playwright drives Debian's chromium.

The server runs through the library (:func:`mame_eval.playground.serve`) with tiny random
models (32 px) so every generation takes a moment. Marked ``slow``; skipped only when
``/usr/bin/chromium`` or playwright is missing *and* ``$CI`` is unset -- in CI these fail.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mame_eval.generation import read_manifest
from mame_eval.io import read_jsonl

pytest_plugins = ["conftest_models"]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT = 240_000  # ms: a busy 2-core machine loads torch and diffusers slowly

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium); "
                       "always runs in CI"),
]

sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else None
if sync_api is None:  # in CI a missing playwright is a failure, not a skip
    import playwright.sync_api as sync_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_txt2img, tiny_inpaint, prepared):
    """One playground server for the module, on tiny models; its workspace folder."""
    from mame_eval.playground import serve, url

    workspace = tmp_path_factory.mktemp("playground")
    port = _free_port()
    proc = serve(str(tiny_txt2img), str(tiny_inpaint), workspace=workspace, data=prepared,
                 port=port, timeout=WAIT / 1000, log=workspace.parent / "playground.log")
    yield url("127.0.0.1", port), workspace
    proc.kill()
    proc.wait()


def _idle(page) -> None:
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=WAIT)


def _open(browser, address: str, tab: str | None = None):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(address)
    page.get_by_text("MAM-E playground").first.wait_for(timeout=WAIT)
    _idle(page)
    if tab:
        page.get_by_role("tab", name=tab).click()
    return page


def _select(page, label: str, option: str) -> None:
    _panel(page).get_by_role("combobox", name=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    _idle(page)


def _number(page, label: str, value: int, nth: int = 0) -> None:
    box = _panel(page).get_by_label(label, exact=True).nth(nth)
    box.fill(str(value))
    box.press("Enter")
    _idle(page)


def _panel(page):
    """The visible tab panel."""
    return page.locator('[role="tabpanel"]:visible')


def _runs(workspace: Path, kind: str) -> list[Path]:
    return sorted(workspace.glob(f".scratch/*/*-{kind}"))


def _alerts(page) -> list[str]:
    return [t.strip() for t in _panel(page).locator('[data-testid="stAlert"]').all_inner_texts()]


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag on the drawing canvas from ``start`` to ``end`` (fractions of its size)."""
    canvas = _panel(page).locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=WAIT)
    box = canvas.bounding_box()
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
    page.mouse.up()
    # The canvas reports the drawing to the server on its own schedule, and the rerun that
    # follows may not have started when _idle looks: give it time, then wait for it.
    page.wait_for_timeout(1500)
    _idle(page)


# --------------------------------------------------------------------------- tests


def test_pickers_build_a_trained_prompt_and_generate(server, browser):
    address, workspace = server
    page = _open(browser, address)
    _select(page, "Vendor", "siemens")
    _select(page, "View", "MLO")
    _select(page, "Attributes", "density and area")
    _select(page, "Density", "high")
    _select(page, "Area", "small")
    expected = "a siemens mammogram in MLO view with high density and small area"
    _panel(page).get_by_text(expected).wait_for()
    # the pickers offer only the vocabulary: no free text can reach the model through them
    page.get_by_role("combobox", name="View").first.click()
    assert sorted(page.get_by_role("option").all_inner_texts()) == ["CC", "MLO"]
    page.keyboard.press("Escape")
    _number(page, "Steps", 2)
    _number(page, "Images", 2)
    _number(page, "Seed", 7)
    before = set(_runs(workspace, "txt2img"))
    page.get_by_role("button", name="Generate").first.click()
    page.get_by_text("2 image(s) added to the gallery").wait_for(timeout=WAIT)
    (run,) = set(_runs(workspace, "txt2img")) - before
    rows = read_jsonl(run / "manifest.jsonl")
    assert [r["prompt"] for r in rows] == [expected] * 2
    assert [r["seed"] for r in rows] == [7, 8] and {r["steps"] for r in rows} == {2}
    assert _panel(page).get_by_text(re.compile(r"seed 8 · guidance 4 · 2 steps")).count() == 1
    assert _panel(page).get_by_text("step 4 / 4").count() == 1  # the progress bar's last word
    page.screenshot(path=str(workspace.parent / "text-to-image.png"), full_page=True)
    page.close()


def test_a_bad_prompt_gives_one_clear_message(server, browser):
    address, _ = server
    page = _open(browser, address)
    page.get_by_text("Free prompt").first.click()
    _idle(page)
    box = page.get_by_role("textbox", name="Prompt", exact=True).first
    for text, message in (
            ("a siemens mammogram in XL view with high density", "unknown view 'xl'"),
            ("a mammogram in CC view with big area",
             "is a hologic prompt, but this model was trained on fusion prompts")):
        box.fill(text)
        box.press("Enter")
        _panel(page).get_by_text(message).wait_for(timeout=WAIT)  # the rerun has shown it
        _idle(page)
        alerts = _alerts(page)
        assert len(alerts) == 1 and message in alerts[0], alerts
        assert page.get_by_role("button", name="Generate").first.is_disabled()
    box.fill("A Siemens mammogram in CC view with  LOW density")
    box.press("Enter")
    _panel(page).get_by_text("a siemens mammogram in CC view with low density").wait_for()
    _idle(page)
    assert _alerts(page) == []
    page.close()


def test_draw_a_mask_on_the_canvas_and_inpaint(server, browser):
    address, workspace = server
    page = _open(browser, address, "Inpaint")
    _panel(page).get_by_text("Prepared image", exact=True).first.click()
    _idle(page)
    _panel(page).get_by_text("Box", exact=True).click()
    _idle(page)
    _drag(page, (0.25, 0.40), (0.50, 0.65))  # a box over image pixels ~8-16 x ~13-21 (32 px)
    _number(page, "Steps", 2)
    _number(page, "Variants", 1)
    before = set(_runs(workspace, "inpaint"))
    page.get_by_role("button", name="Inpaint", exact=True).click()
    _panel(page).get_by_text("before", exact=True).wait_for(timeout=WAIT)
    assert _alerts(page) == []
    (run,) = set(_runs(workspace, "inpaint")) - before
    mask = np.asarray(Image.open(run / "mask.png")) > 0
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 8) <= 1 and abs(xs.max() + 1 - 16) <= 1
    assert abs(ys.min() - 13) <= 1 and abs(ys.max() + 1 - 21) <= 1
    (row,) = read_manifest(run).values()
    source = np.asarray(Image.open(row["image"]))
    result = np.asarray(Image.open(run / row["file"]))
    far = np.ones_like(mask)
    far[max(0, ys.min() - 2):ys.max() + 3, max(0, xs.min() - 2):xs.max() + 3] = False
    np.testing.assert_array_equal(result[far], source[far])  # composited outside the mask
    assert (result[mask] != source[mask]).any()
    assert row["blend"] == "poisson"
    page.screenshot(path=str(workspace.parent / "inpaint.png"), full_page=True)
    page.close()


def test_a_mask_outside_the_image_gives_one_clear_message(server, browser):
    address, _ = server
    page = _open(browser, address, "Inpaint")
    _panel(page).get_by_text("Prepared image", exact=True).first.click()
    _idle(page)
    box = page.get_by_label("…or type a box x0,y0,x1,y1 (image pixels)").first
    box.fill("20,20,60,60")
    box.press("Enter")
    _idle(page)
    page.get_by_role("button", name="Inpaint", exact=True).click()
    message = "box [20.0, 20.0, 60.0, 60.0]: expected 0 ≤ x0 < x1 ≤ 32"
    _panel(page).get_by_text(message).wait_for(timeout=WAIT)
    _idle(page)
    alerts = _alerts(page)
    assert len(alerts) == 1 and message in alerts[0], alerts
    # an unrelated rerun (the canvas reporting back, another widget) keeps the message ...
    _number(page, "Steps", 3)
    alerts = _alerts(page)
    assert len(alerts) == 1 and message in alerts[0], alerts
    # ... until what caused it changes
    box.fill("")
    box.press("Enter")
    _panel(page).locator('[data-testid="stAlert"]').first.wait_for(state="detached",
                                                                   timeout=WAIT)
    _idle(page)
    assert _alerts(page) == []
    # nothing drawn and no box: a clear message too
    page.get_by_role("button", name="Inpaint", exact=True).click()
    _panel(page).get_by_text("nothing is drawn yet").wait_for(timeout=WAIT)
    _idle(page)
    alerts = _alerts(page)
    assert len(alerts) == 1 and "nothing is drawn yet" in alerts[0], alerts
    page.close()


def test_healthy_plus_lesion_then_save_a_run_folder_for_a_study(server, browser, prepared,
                                                                 tmp_path):
    from mame_eval.studies.study import create_study

    address, workspace = server
    page = _open(browser, address, "Healthy + lesion")
    _number(page, "Steps", 2)
    _number(page, "Images", 2)
    before = set(_runs(workspace, "synthesize"))
    page.get_by_role("button", name="Generate healthy + lesion").click()
    _panel(page).get_by_text("healthy", exact=True).first.wait_for(timeout=WAIT)
    (run,) = set(_runs(workspace, "synthesize")) - before
    rows = list(read_manifest(run).values())
    assert len(rows) == 2 and {r["box_source"] for r in rows} <= {
        "breast", "image (no breast region large enough)"}
    assert {r["mask_shape"] for r in rows} == {"ellipse"}
    page.screenshot(path=str(workspace.parent / "healthy-lesion.png"), full_page=True)

    page.get_by_role("tab", name="Gallery & save").click()
    _idle(page)
    panel = _panel(page)
    boxes = panel.locator('[data-testid="stCheckbox"]')
    count = boxes.count()
    assert count >= 2
    for k in range(count - 2, count):  # the two synthesized images come last
        boxes.nth(k).locator("label").click()
        _idle(page)
    name = page.get_by_label("Run folder name")
    name.fill("chosen")
    page.get_by_role("button", name="Save 2 selected").click()
    panel.get_by_text(re.compile("Saved 2 image")).wait_for(timeout=WAIT)
    page.screenshot(path=str(workspace.parent / "gallery.png"), full_page=True)
    page.close()

    saved = workspace / "chosen"
    manifest = read_jsonl(saved / "manifest.jsonl")
    assert [r["file"] for r in manifest] == ["00000.png", "00001.png"]
    for row, original in zip(manifest, rows, strict=True):
        for key in ("prompt", "seed", "box", "model", "revision", "inpaint_model"):
            assert row[key] == original[key]
        assert (saved / row["mask_file"]).is_file() and (saved / row["healthy_file"]).is_file()
        np.testing.assert_array_equal(np.asarray(Image.open(saved / row["file"])),
                                      np.asarray(Image.open(run / original["file"])))
    # The prepared set and the playground's model differ in native size; a study needs the
    # common size chosen explicitly (nothing is resampled silently).
    size = Image.open(saved / manifest[0]["file"]).size[::-1]
    study = create_study(tmp_path / "study", prepared / "healthy", saved, n=4, readers="ann",
                         seed=1, size=size)
    assert set(study.reader_links) == {"ann"}
    key = (tmp_path / "study" / "key.csv").read_text()
    assert key.count("\n") >= 5  # header + 4 cases


def test_one_generation_at_a_time_and_stop(server, browser):
    """Two sessions, one model: the second waits for the lock while the first runs, and
    Stop frees it; the waiting session's page stays usable and then finishes."""
    address, workspace = server
    first = _open(browser, address)
    second = _open(browser, address)
    _number(first, "Steps", 150)
    _number(first, "Images", 16)
    _number(second, "Steps", 2)
    _number(second, "Images", 1)
    first.get_by_role("button", name="Generate").first.click()
    first.get_by_text(re.compile(r"step \d+ / 2400")).first.wait_for(timeout=WAIT)
    second.get_by_role("button", name="Generate").first.click()
    second.get_by_text(re.compile("waiting for another session's generation")).wait_for(
        timeout=WAIT)
    second.get_by_role("tab", name="Inpaint").click()  # its UI is not blocked
    second.get_by_role("tab", name="Text to image").click()
    first.get_by_role("button", name="Stop").click()
    first.get_by_text(re.compile(r"Stopped at step \d+ of 2400")).wait_for(timeout=WAIT)
    second.get_by_text("1 image(s) added to the gallery").wait_for(timeout=WAIT)
    long_run = [r for r in _runs(workspace, "txt2img")
                if any(row["steps"] == 150 for row in read_jsonl(r / "manifest.jsonl"))
                or not read_manifest(r)]
    assert long_run and all(len(read_manifest(r)) < 16 for r in long_run)  # it did stop
    first.close()
    second.close()
