"""Sampling: generation runs, resume, inpainting with compositing, synthesis, 2 processes."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mame_eval.errors import InputError, PromptError
from mame_eval.generation import (
    box_to_mask,
    composite,
    feather_alpha,
    generate,
    inpaint,
    prompt_from_attributes,
    random_box_in_breast,
    read_manifest,
    synthesize,
)
from mame_eval.io import read_jsonl
from mame_eval.prompts import parse

pytest_plugins = ["conftest_models"]
# diffusers' schedulers call np.array(tensor, copy=False) internally: not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]

PROMPT = "a hologic mammogram in CC view with small area"
MANIFEST_KEYS = {"model", "revision", "prompt", "negative_prompt", "guidance_scale", "steps",
                 "scheduler", "seed", "height", "width", "file", "time_s", "created", "index"}


class Counting:
    """A pipeline proxy that counts rendered images and can fail after some calls."""

    def __init__(self, pipe, fail_after_calls=None):
        self._pipe, self.images, self.calls, self._fail = pipe, 0, 0, fail_after_calls

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, prompt, **kwargs):
        if self._fail is not None and self.calls >= self._fail:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.images += len(prompt)
        return self._pipe(prompt=prompt, **kwargs)


def png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*.png"))}


# --------------------------------------------------------------------------- prompts


def test_prompt_from_attributes_follows_the_grammar():
    text, side = prompt_from_attributes("vendor=siemens,view=MLO,density=high,area=small")
    assert text == "a siemens mammogram in MLO view with high density and small area"
    assert side is None
    parsed = parse(text)
    assert (parsed.vendor.value, parsed.view.value, parsed.density.value, parsed.area.value) == \
        ("siemens", "MLO", "high", "small")
    assert prompt_from_attributes("view=cc, area=big")[0] == \
        "a mammogram in CC view with big area"
    assert prompt_from_attributes("view=MLO,density=C,laterality=r") == \
        ("a mammogram in MLO view with high density", "R")
    with pytest.raises(PromptError, match="vendor"):
        prompt_from_attributes("view=CC,density=high,area=small")
    with pytest.raises(PromptError, match="enormous"):
        prompt_from_attributes("view=CC,area=enormous")
    with pytest.raises(InputError, match="key=value"):
        prompt_from_attributes("view")


# --------------------------------------------------------------------------- generate


def test_same_seed_same_bytes_and_a_complete_manifest(tiny_txt2img, tmp_path):
    a = generate(tiny_txt2img, PROMPT, tmp_path / "a", n=3, steps=2, seed=7, batch_size=2,
                 negative_prompt="white background")
    b = generate(tiny_txt2img, PROMPT, tmp_path / "b", n=3, steps=2, seed=7, batch_size=2,
                 negative_prompt="white background")
    c = generate(tiny_txt2img, PROMPT, tmp_path / "c", n=3, steps=2, seed=8, batch_size=2,
                 negative_prompt="white background")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert len(set(digests(tmp_path / "a").values())) == 3  # distinct images within a run
    assert digests(tmp_path / "a")["00001.png"] == digests(tmp_path / "c")["00000.png"]
    assert a.generated == 3 and c.skipped == 0
    rows = read_jsonl(tmp_path / "a" / "manifest.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["seed"] for r in rows] == [7, 8, 9]
    for row in rows:
        assert row.keys() >= MANIFEST_KEYS
        assert row["revision"].startswith("sha256:") and row["scheduler"] == "dpm++"
        assert row["negative_prompt"] == "white background"
        assert png(tmp_path / "a" / row["file"]).shape == (32, 32, 3)
    assert b.rows == read_jsonl(tmp_path / "b" / "manifest.jsonl")


def test_any_image_can_be_regenerated_alone(txt2img_pipe, tmp_path):
    generate(None, PROMPT, tmp_path / "run", n=4, steps=2, seed=10, batch_size=1,
             pipe=txt2img_pipe)
    generate(None, PROMPT, tmp_path / "alone", n=1, steps=2, seed=12, batch_size=1,
             pipe=txt2img_pipe)
    assert digests(tmp_path / "alone")["00000.png"] == digests(tmp_path / "run")["00002.png"]


def test_interrupted_run_resumes_without_regenerating(txt2img_pipe, tmp_path):
    reference = tmp_path / "reference"
    generate(None, PROMPT, reference, n=5, steps=2, seed=3, batch_size=2, pipe=txt2img_pipe)

    run = tmp_path / "run"
    flaky = Counting(txt2img_pipe, fail_after_calls=1)
    with pytest.raises(KeyboardInterrupt):
        generate(None, PROMPT, run, n=5, steps=2, seed=3, batch_size=2, pipe=flaky)
    assert sorted(read_manifest(run)) == [0, 1]  # the first batch was kept
    first = {p: (run / p).stat().st_mtime_ns for p in ("00000.png", "00001.png")}

    counting = Counting(txt2img_pipe)
    resumed = generate(None, PROMPT, run, n=5, steps=2, seed=3, batch_size=2, pipe=counting)
    assert counting.images == 3 and resumed.generated == 3 and resumed.skipped == 2
    assert {p: (run / p).stat().st_mtime_ns for p in first} == first
    assert digests(run) == digests(reference)
    assert len(read_jsonl(run / "manifest.jsonl")) == 5

    # A killed writer: truncated last manifest line, an image without its line.
    lines = (run / "manifest.jsonl").read_text().splitlines()
    (run / "manifest.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    counting = Counting(txt2img_pipe)
    again = generate(None, PROMPT, run, n=5, steps=2, seed=3, batch_size=2, pipe=counting)
    assert counting.images == 2 and again.skipped == 3
    assert digests(run) == digests(reference)
    done = Counting(txt2img_pipe)
    generate(None, PROMPT, run, n=5, steps=2, seed=3, batch_size=2, pipe=done)
    assert done.images == 0


def test_a_run_with_other_settings_is_refused(txt2img_pipe, tmp_path):
    generate(None, PROMPT, tmp_path, n=1, steps=2, pipe=txt2img_pipe)
    with pytest.raises(InputError, match="guidance_scale"):
        generate(None, PROMPT, tmp_path, n=2, steps=2, guidance_scale=7, pipe=txt2img_pipe)
    with pytest.raises(InputError, match="seed_base"):
        generate(None, PROMPT, tmp_path, n=2, steps=2, seed=5, pipe=txt2img_pipe)


def test_right_laterality_is_the_mirror_image(txt2img_pipe, tmp_path):
    generate(None, PROMPT, tmp_path / "l", n=1, steps=2, seed=1, pipe=txt2img_pipe)
    r = generate(None, PROMPT, tmp_path / "r", n=1, steps=2, seed=1, laterality="R",
                 pipe=txt2img_pipe)
    np.testing.assert_array_equal(png(tmp_path / "r" / "00000.png"),
                                  png(tmp_path / "l" / "00000.png")[:, ::-1])
    assert r.rows[0]["laterality"] == "R"


def test_bad_arguments(txt2img_pipe, tmp_path):
    with pytest.raises(InputError, match="multiples of 8"):
        generate(None, PROMPT, tmp_path, n=1, height=30, pipe=txt2img_pipe)
    with pytest.raises(PromptError, match="laterality"):
        generate(None, PROMPT, tmp_path, n=1, laterality="X", pipe=txt2img_pipe)
    with pytest.raises(InputError, match="--n"):
        generate(None, PROMPT, tmp_path, n=0, pipe=txt2img_pipe)


# --------------------------------------------------------------------------- inpaint


def brute_force_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest mask pixel, by brute force."""
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    d2 = (gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2
    return np.sqrt(d2.min(axis=-1))


def test_box_mask_matches_prepare():
    from mame_eval.data.preprocess import box_mask

    for box in [(3.2, 10.0, 20.7, 30.5), (0, 0, 64, 64), (10.5, 10.5, 11.5, 11.5)]:
        np.testing.assert_array_equal(box_to_mask(box, 64, 64), box_mask(box, 64) > 0)
    with pytest.raises(InputError, match="x0 < x1"):
        box_to_mask((20, 5, 10, 9), 64, 64)


def test_feather_and_composite():
    mask = box_to_mask((20, 24, 30, 40), 64, 64)
    alpha = feather_alpha(mask, 3)
    distance = brute_force_distance(mask)
    assert (alpha[mask] == 1).all()
    assert (alpha[distance >= 3] == 0).all()
    assert (alpha[(distance > 0) & (distance < 3)] > 0).all()
    assert ((alpha > 0) & (alpha < 1)).sum() > 0
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = composite(original, generated, alpha)
    np.testing.assert_array_equal(out[alpha == 0], original[alpha == 0])
    np.testing.assert_array_equal(out[mask], generated[mask])


def test_inpaint_keeps_pixels_outside_the_feathered_box(prepared, tiny_inpaint, tmp_path):
    image = sorted((prepared / "healthy").glob("*.png"))[0]
    box = (20, 16, 36, 40)
    run = inpaint(tiny_inpaint, image, tmp_path / "c", box=box, n=2, steps=2, seed=5,
                  feather=2)
    source = png(image)
    mask = box_to_mask(box, 64, 64)
    # the Poisson blend's tissue ring (2 px at 64) and then the 2-px ramp
    assert run.rows[0]["blend_margin"] == 2
    outside = brute_force_distance(mask) >= 2 + 2
    for path in run.files:
        result = png(path)
        np.testing.assert_array_equal(result[outside], source[outside])
        assert (result[mask] != source[mask]).any()
    np.testing.assert_array_equal(png(tmp_path / "c" / "mask.png") > 0, mask)
    row = run.rows[0]
    assert row["box"] == list(box) and row["composite"] is True and row["feather"] == 2
    assert row["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()

    raw = inpaint(tiny_inpaint, image, tmp_path / "raw", box=box, n=1, steps=2, seed=5,
                  composite_output=False)
    # Without compositing the VAE round trip changes the healthy tissue too.
    assert (png(raw.files[0])[outside] != source[outside]).any()


def test_inpaint_with_a_mask_file_and_bad_inputs(prepared, inpaint_pipe, tmp_path):
    row = read_jsonl(prepared / "lesion" / "metadata.jsonl")[0]
    image, mask = prepared / "lesion" / row["file_name"], prepared / "lesion" / row["mask_file"]
    run = inpaint(None, image, tmp_path / "m", mask=mask, n=1, steps=2, pipe=inpaint_pipe)
    region = png(mask) >= 128
    far = brute_force_distance(region) >= run.rows[0]["feather"] + run.rows[0]["blend_margin"]
    np.testing.assert_array_equal(png(run.files[0])[far], png(image)[far])
    with pytest.raises(InputError, match="exactly one"):
        inpaint(None, image, tmp_path / "x", pipe=inpaint_pipe)
    with pytest.raises(InputError, match="not found"):
        inpaint(None, tmp_path / "none.png", tmp_path / "x", box=(1, 1, 5, 5),
                pipe=inpaint_pipe)
    with pytest.raises(InputError, match="x0 < x1"):
        inpaint(None, image, tmp_path / "x", box=(1, 1, 500, 5), pipe=inpaint_pipe)


# --------------------------------------------------------------------------- synthesize


def test_random_box_lies_inside_the_breast():
    from mame_eval.data.preprocess import breast_mask

    image = np.zeros((128, 96, 3), dtype=np.uint8)
    gy, gx = np.mgrid[:128, :96]
    breast = ((gy - 64) / 60.0) ** 2 + (gx / 80.0) ** 2 <= 1  # half-ellipse on the left edge
    image[breast] = 150
    for seed in range(20):
        box, source = random_box_in_breast(image, np.random.default_rng(seed))
        assert source == "breast"
        assert breast_mask(image)[box_to_mask(box, 128, 96)].all()
    assert random_box_in_breast(image, np.random.default_rng(3)) == \
        random_box_in_breast(image, np.random.default_rng(3))
    box, source = random_box_in_breast(np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))
    assert source.startswith("image") and box_to_mask(box, 64, 64).any()


def test_synthesize_healthy_then_lesion(txt2img_pipe, inpaint_pipe, tmp_path):
    run = synthesize(None, None, PROMPT, tmp_path / "s", n=2, steps=2, seed=4, feather=1,
                     box=(4, 6, 14, 18), laterality="R", pipe=txt2img_pipe,
                     inpaint_pipe=inpaint_pipe)
    assert [r["index"] for r in run.rows] == [0, 1]
    for row in run.rows:
        healthy = png(tmp_path / "s" / row["healthy_file"])
        lesion = png(tmp_path / "s" / row["file"])
        mask = png(tmp_path / "s" / row["mask_file"]) > 0
        assert row["box"] == [4.0, 6.0, 14.0, 18.0] and row["box_source"] == "given"
        np.testing.assert_array_equal(mask, box_to_mask(row["box"], 32, 32))
        assert row["blend"] == "poisson" and row["blend_margin"] == 2  # 32 px: the 2-px floor
        far = brute_force_distance(mask) >= row["feather"] + row["blend_margin"]
        np.testing.assert_array_equal(lesion[far], healthy[far])
        assert (lesion[mask] != healthy[mask]).any()
        assert row["inpaint_model"] and row["inpaint_revision"].startswith("sha256:")
    # The healthy stage is exactly `generate` with the same seed, mirrored for R.
    generate(None, PROMPT, tmp_path / "g", n=1, steps=2, seed=4, laterality="R",
             pipe=txt2img_pipe)
    np.testing.assert_array_equal(png(tmp_path / "s" / "healthy" / "00000.png"),
                                  png(tmp_path / "g" / "00000.png"))

    random = synthesize(None, None, PROMPT, tmp_path / "r", n=1, steps=2, seed=4,
                        pipe=txt2img_pipe, inpaint_pipe=inpaint_pipe)
    box = random.rows[0]["box"]
    assert 0 <= box[0] < box[2] <= 32 and 0 <= box[1] < box[3] <= 32


# --------------------------------------------------------------------------- CLI, processes


def test_cli_generate_with_attributes(tiny_txt2img, tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    out = tmp_path / "cli"
    args = ["generate", "--model", str(tiny_txt2img), "--attributes",
            "vendor=hologic,view=MLO,area=big,laterality=R", "--n", "2", "--steps", "2",
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 new" in result.output
    rows = read_jsonl(out / "manifest.jsonl")
    assert rows[0]["prompt"] == "a hologic mammogram in MLO view with big area"
    assert rows[0]["laterality"] == "R"
    again = CliRunner().invoke(app, args)
    assert "0 new, 2 already there" in again.output
    both = CliRunner().invoke(app, args + ["--prompt", PROMPT])
    assert both.exit_code != 0


def test_two_processes_split_the_work(tiny_txt2img, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): every image once, one manifest."""
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no",
           "-m", "mame_eval", "generate", "--model", str(tiny_txt2img), "--prompt", PROMPT,
           "--n", "5", "--steps", "2", "--batch-size", "2", "--seed", "11", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3, 4]
    assert {r["process"] for r in rows} == {0, 1}
    assert sorted(r["seed"] for r in rows) == [11, 12, 13, 14, 15]
    hashes = digests(out)
    assert len(hashes) == 5 and len(set(hashes.values())) == 5
    assert not list(out.glob(".manifest.rank-*"))
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["index"] == 0


def test_cli_inpaint_and_synthesize_take_mask_shape_and_blend(prepared, tiny_inpaint,
                                                              tiny_txt2img, tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app
    from mame_eval.generation.masks import ellipse_mask

    image = sorted((prepared / "healthy").glob("*.png"))[0]
    box = (20, 16, 36, 40)
    base = ["inpaint", "--model", str(tiny_inpaint), "--image", str(image), "--box",
            ",".join(map(str, box)), "--steps", "2", "--feather", "2"]
    runner = CliRunner()
    result = runner.invoke(app, base + ["--mask-shape", "ellipse", "--blend", "feather",
                                        "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    row = read_jsonl(tmp_path / "e" / "manifest.jsonl")[0]
    assert row["mask_shape"] == "ellipse" and row["blend"] == "feather" and row["composite"]
    region = ellipse_mask(box, 64, 64)
    np.testing.assert_array_equal(png(tmp_path / "e" / "mask.png") > 0, region)
    far = brute_force_distance(region) >= 2
    np.testing.assert_array_equal(png(tmp_path / "e" / "00000.png")[far], png(image)[far])

    result = runner.invoke(app, base + ["--blend", "none", "--out", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    row = read_jsonl(tmp_path / "n" / "manifest.jsonl")[0]
    assert row["composite"] is False and row["blend"] is None and row["mask_shape"] == "box"
    # raw output: the VAE round trip changed pixels far from the box as well
    assert (png(tmp_path / "n" / "00000.png")[far] != png(image)[far]).any()

    for bad, match in ((["--mask-shape", "star"], "--mask-shape 'star'"),
                       (["--blend", "soft"], "--blend 'soft'"),
                       (["--blend", "poisson", "--no-composite"], "give one of them")):
        result = runner.invoke(app, base + bad + ["--out", str(tmp_path / "bad")])
        assert result.exit_code != 0 and isinstance(result.exception, InputError)
        assert match in str(result.exception)
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "s"
    result = runner.invoke(app, ["synthesize", "--model", str(tiny_txt2img), "--inpaint-model",
                                 str(tiny_inpaint), "--prompt", PROMPT, "--n", "1",
                                 "--steps", "2", "--mask-shape", "blob", "--blend",
                                 "feather", "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = read_jsonl(out / "manifest.jsonl")[0]
    assert row["mask_shape"] == "blob" and row["blend"] == "feather"
    mask = png(out / row["mask_file"]) > 0
    x0, y0, x1, y1 = row["box"]
    assert mask.sum() < (x1 - x0) * (y1 - y0)  # a blob inside its box, not the box
