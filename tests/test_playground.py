"""The playground's library side (no browser): prompts per model family, masks from a
drawing, the per-model lock, step reporting, saving a selection, the launcher."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from mame_eval.errors import InputError, PromptError
from mame_eval.generation import generate, inpaint, read_manifest
from mame_eval.io import read_jsonl
from mame_eval.playground import DEFAULT_ADDRESS, ENV_MODEL, serve_command
from mame_eval.playground.session import (
    GenerationStopped,
    ModelSlot,
    StepCounter,
    StepReporter,
    attribute_choices,
    build_prompt,
    check_free_prompt,
    fit_image,
    gallery_items,
    mask_from_drawing,
    model_family,
    save_selection,
)
from mame_eval.prompts import Family, parse

pytest_plugins = ["conftest_models"]
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


# --------------------------------------------------------------------------- prompts


def test_each_family_offers_exactly_its_trained_attributes():
    assert model_family("Likalto4/mammo40k_healthy-only") is Family.HOLOGIC
    assert model_family("Likalto4/vindr_siemens_healthy") is Family.SIEMENS
    assert model_family(None) is Family.FUSION  # the embedded model is fusion-style
    assert model_family("some/folder", "siemens") is Family.SIEMENS
    with pytest.raises(PromptError):
        model_family(None, "inpainting")
    assert set(attribute_choices(Family.HOLOGIC)) == {"view", "area"}
    assert set(attribute_choices(Family.SIEMENS)) == {"view", "density"}
    assert set(attribute_choices(Family.FUSION)) == {"view", "vendor", "density", "area"}
    # every combination the pickers can form parses back to itself (the trained grammar)
    for family in (Family.HOLOGIC, Family.SIEMENS, Family.FUSION):
        c = attribute_choices(family)
        for view in c["view"]:
            for vendor in c.get("vendor", [None]):
                for density in c.get("density", [None]) + ([None] if "area" in c else []):
                    for area in c.get("area", [None]) + ([None] if "density" in c else []):
                        if density is None and area is None:
                            continue
                        if family is not Family.FUSION and density and area:
                            continue
                        text = build_prompt(family, view, vendor, density, area)
                        assert parse(text).family is family
                        assert check_free_prompt(text, family) == text


def test_free_prompts_are_checked_against_the_models_family():
    assert check_free_prompt("A mammogram in MLO view with  BIG area", Family.HOLOGIC) == \
        "a mammogram in MLO view with big area"
    with pytest.raises(PromptError, match="hologic prompt, but this model was trained on "
                                          "siemens prompts such as 'a mammogram in CC view"):
        check_free_prompt("a mammogram in CC view with big area", Family.SIEMENS)
    with pytest.raises(PromptError, match="unknown view"):
        check_free_prompt("a siemens mammogram in AP view with low density", Family.FUSION)
    with pytest.raises(PromptError, match="empty"):
        check_free_prompt("  ", Family.FUSION)
    with pytest.raises(PromptError, match="Inpaint tab"):
        check_free_prompt("a mammogram with a lesion", Family.FUSION)


# --------------------------------------------------------------------------- masks


def test_mask_from_a_canvas_drawing():
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[30:60, 15:45, 3] = 115  # a translucent painted box, canvas 3x the image
    mask = mask_from_drawing(rgba, 32, 32)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 14, 10, 19)
    thin = np.zeros((96, 96, 4), np.uint8)
    thin[40, 10:80, 3] = 255  # a 1-px stroke covers < 50 % of every image pixel
    assert mask_from_drawing(thin, 32, 32).sum() > 0
    for empty in (None, np.zeros((96, 96, 4), np.uint8), np.zeros((96, 96), np.uint8)):
        with pytest.raises(InputError, match="nothing is drawn"):
            mask_from_drawing(empty, 32, 32)


def test_fit_image_to_the_models_size():
    image = np.zeros((60, 40, 3), np.uint8)
    fitted, note = fit_image(image, 32)
    assert fitted.shape == (32, 32, 3) and "40×60" in note
    same, note = fit_image(np.zeros((32, 32, 3), np.uint8), 32)
    assert note is None and same.shape == (32, 32, 3)


# --------------------------------------------------------------------------- running


def test_one_generation_at_a_time_per_model():
    slot = ModelSlot(pipe="pipe", task="txt2img")
    order, waited = [], []

    def job(name: str, hold_s: float) -> None:
        with slot.hold(name, waiting=lambda s: waited.append(name)):
            order.append(f"{name}+")
            time.sleep(hold_s)
            order.append(f"{name}-")

    first = threading.Thread(target=job, args=("a", 0.6))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=job, args=("b", 0.0))
    second.start()
    first.join()
    second.join()
    assert order == ["a+", "a-", "b+", "b-"]  # never interleaved
    assert "b" in waited and "a" not in waited
    assert slot.owner is None and not slot.lock.locked()
    # an error inside releases the lock too
    with pytest.raises(GenerationStopped), slot.hold("c"):
        raise GenerationStopped("stopped")
    assert not slot.lock.locked()


def test_step_reporter_counts_every_step_and_can_stop(txt2img_pipe, tmp_path):
    counter = StepCounter(total=2 * 3)
    steps = []
    reporter = StepReporter(txt2img_pipe, lambda: steps.append(counter.step()))
    run = generate(None, "a hologic mammogram in CC view with small area", tmp_path / "g",
                   n=2, steps=3, batch_size=1, pipe=reporter)
    assert steps == pytest.approx([k / 6 for k in range(1, 7)])
    assert counter.text().startswith("step 6 / 6")
    assert run.rows[0]["model"] == txt2img_pipe.mame_source.model  # a transparent wrapper

    calls = []

    def stop_at_4() -> None:
        calls.append(1)
        if len(calls) == 4:
            raise GenerationStopped("stopped by the user")

    with pytest.raises(GenerationStopped):
        generate(None, "a hologic mammogram in CC view with small area", tmp_path / "s",
                 n=3, steps=3, batch_size=1, pipe=StepReporter(txt2img_pipe, stop_at_4))
    assert sorted(read_manifest(tmp_path / "s")) == [0]  # the finished image is kept


# --------------------------------------------------------------------------- saving


def test_save_selection_writes_one_manifest_and_feeds_the_consumers(
        txt2img_pipe, inpaint_pipe, prepared, tmp_path):
    from mame_eval.images import list_images
    from mame_eval.journeys.explain import resolve_group
    from mame_eval.studies.design import list_images as study_images

    prompt = "a siemens mammogram in CC view with low density"
    t2i = generate(None, prompt, tmp_path / "t", n=2, steps=2, seed=3, pipe=txt2img_pipe)
    source = sorted((prepared / "healthy").glob("*.png"))[0]
    with Image.open(source) as im:
        small = np.asarray(im.convert("RGB").resize((32, 32)))
    Image.fromarray(small).save(tmp_path / "src.png")
    inp = inpaint(None, tmp_path / "src.png", tmp_path / "i", box=(8, 8, 20, 20), n=1, steps=2,
                  pipe=inpaint_pipe)
    items = gallery_items(t2i.out)[1:] + gallery_items(inp.out)
    out = save_selection(items, tmp_path / "saved")
    rows = read_jsonl(out / "manifest.jsonl")
    assert [r["file"] for r in rows] == ["00000.png", "00001.png"]
    assert rows[0]["prompt"] == prompt and rows[0]["seed"] == 4 and "mask_file" not in rows[0]
    assert rows[1]["mask_file"] == "masks/00001.png" and rows[1]["task"] == "inpaint"
    assert rows[0]["source"] == str(t2i.out / "00001.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "00000.png")),
                                  np.asarray(Image.open(t2i.out / "00001.png")))
    assert sorted(read_manifest(out)) == [0, 1]  # a valid generation run
    assert [p.name for p in list_images(out)] == ["00000.png", "00001.png"]  # diversity
    assert len(study_images(out, "--synthetic")) == 2  # study create
    images, masks = resolve_group(out, out / "masks")  # explain
    assert images == out and (masks / "00001.png").is_file()
    assert not list(tmp_path.glob(".saved.saving"))
    with pytest.raises(InputError, match="not empty"):
        save_selection(items, out)
    with pytest.raises(InputError, match="nothing is selected"):
        save_selection([], tmp_path / "none")


# --------------------------------------------------------------------------- launcher


def test_the_server_listens_on_localhost_unless_told_otherwise(tmp_path):
    cmd, env = serve_command(workspace=tmp_path)
    assert DEFAULT_ADDRESS == "127.0.0.1"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert ENV_MODEL not in env
    cmd, env = serve_command("my/model", address="0.0.0.0", port=9000, workspace=tmp_path)
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--server.port") + 1] == "9000" and env[ENV_MODEL] == "my/model"
    with pytest.raises(InputError, match="--port"):
        serve_command(port=0)
    with pytest.raises(PromptError):
        serve_command(family="vendor")
    with pytest.raises(InputError, match="--data"):
        serve_command(data=tmp_path)


def test_cli_playground_help_and_bad_options(tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    result = CliRunner().invoke(app, ["playground", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output
    result = CliRunner().invoke(app, ["playground", "--port", "0"])
    assert result.exit_code != 0
