"""Training: config validation, healthy and inpainting fine-tuning on tiny models, resume."""

import copy
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mame_eval.errors import ConfigError
from mame_eval.training import (
    TrainConfig,
    list_checkpoints,
    load_config,
    parse_override,
    train_healthy,
    train_inpaint,
    widen_conv_in,
)

pytest_plugins = ["conftest_models"]
# diffusers' schedulers call np.array(tensor, copy=False) internally: not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]

REPO = Path(__file__).resolve().parents[1]
TINY_KEYS = ("pretrained_model = \"tiny\"\nresolution = 32\ntrain_batch_size = 4\n"
             "learning_rate = 1e-3\nreport_to = \"none\"\nvalidation_inference_steps = 2\n"
             "num_validation_images = 2\n")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- config


def test_unknown_key_is_an_error(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 'pretrained_model = "tiny"\ndata_dir = "d"\n'
                       'output_dir = "o"\nmax_train_steps = 2\nlerning_rate = 1e-4\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "lerning_rate" in str(err.value) and "learning_rate" in str(err.value)
    assert str(cfg) in str(err.value)
    with pytest.raises(ConfigError, match="tiny.channels"):
        load_config(cfg, ["lerning_rate=1", "tiny.channels=3"])


def test_bad_values_and_missing_keys(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 'pretrained_model = "tiny"\ndata_dir = "d"\n'
                       'output_dir = "o"\nmax_train_steps = 2\n')
    assert load_config(cfg).max_train_steps == 2
    with pytest.raises(ConfigError, match="learning_rate = 'fast'"):
        load_config(cfg, ["learning_rate=fast"])
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(cfg, ["mixed_precision=fp8"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(cfg, ["resolution=30"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg, ["max_train_steps"])
    write_config(cfg, 'pretrained_model = "tiny"\n')
    with pytest.raises(ConfigError, match="missing key 'data_dir'"):
        load_config(cfg)
    write_config(cfg, "this is = not toml = at all\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_overrides_parse_as_toml_values():
    assert parse_override("max_train_steps=3") == ("max_train_steps", 3)
    assert parse_override("learning_rate=1e-4") == ("learning_rate", 1e-4)
    assert parse_override("use_8bit_adam=false") == ("use_8bit_adam", False)
    assert parse_override('validation_prompts=["a", "b"]') == ("validation_prompts", ["a", "b"])
    assert parse_override("output_dir=runs/x") == ("output_dir", "runs/x")
    assert parse_override("resume_from_checkpoint = latest") == ("resume_from_checkpoint",
                                                                  "latest")


def test_task_guard(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 'task = "inpaint"\npretrained_model = "tiny"\n'
                       'data_dir = "d"\noutput_dir = "o"\nmax_train_steps = 2\n')
    assert load_config(cfg, task="inpaint").task == "inpaint"
    with pytest.raises(ConfigError, match="train inpaint"):
        load_config(cfg, task="healthy")


@pytest.mark.parametrize("name", ["hologic", "siemens", "fusion", "inpaint-hologic",
                                  "inpaint-siemens", "tiny-healthy", "tiny-inpaint"])
def test_shipped_configs_validate(name):
    config = load_config(REPO / "training" / f"{name}.toml")
    assert config.task == ("inpaint" if "inpaint" in name else "healthy")
    assert config.train_text_encoder  # DreamBooth-style as in the paper
    if not name.startswith("tiny"):
        # The paper's settings (authors' configs): SD v1.5 at 512 px, lr 1e-6 constant, fp16,
        # 8-bit Adam, gradient checkpointing.
        assert config.resolution == 512 and config.learning_rate == 1e-6
        assert config.lr_scheduler == "constant" and config.mixed_precision == "fp16"
        assert config.use_8bit_adam and config.gradient_checkpointing
        assert "stable-diffusion" in config.pretrained_model
        assert ("inpainting" in config.pretrained_model) == ("inpaint" in name)


# --------------------------------------------------------------------------- pieces


def test_widened_conv_in_starts_as_the_original_unet():
    from mame_eval.models import create_tiny_pipeline

    unet = create_tiny_pipeline("txt2img", seed=4).unet.eval()
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = unet(latents, 10, hidden).sample
        assert widen_conv_in(unet) and not widen_conv_in(unet)
        extra = torch.randn(2, 5, 16, 16)
        after = unet(torch.cat([latents, extra], 1), 10, hidden).sample
    assert unet.config.in_channels == 9 and unet.conv_in.in_channels == 9
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- training runs


def test_train_healthy_checkpoint_resume_and_load(prepared, tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app
    from mame_eval.models import load_pipeline

    out = tmp_path / "healthy"
    # Batches of 2 from more than 4 healthy samples: the resume at step 2 lands mid-epoch.
    n_healthy = len((prepared / "healthy" / "metadata.jsonl").read_text().splitlines())
    assert n_healthy > 4  # ≥ 3 batches per epoch
    keys = TINY_KEYS.replace("batch_size = 4", "batch_size = 2")
    cfg = write_config(tmp_path / "h.toml", keys + (
        f'data_dir = "{prepared}"\noutput_dir = "{out}"\nmax_train_steps = 4\n'
        'checkpointing_steps = 2\nvalidation_steps = 2\n'
        'validation_prompts = ["a hologic mammogram in CC view with small area", '
        '"a siemens mammogram in MLO view with high density"]\n'))

    # Interrupted run: the CLI trains 2 of the 4 steps (and checkpoints at step 2) ...
    result = CliRunner().invoke(app, ["train", "healthy", str(cfg), "--set",
                                      "max_train_steps=2"])
    assert result.exit_code == 0, result.output
    assert "step 2" in result.output
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    # ... the rerun resumes from it and continues the step count to 4.
    resumed = train_healthy(load_config(cfg, ["resume_from_checkpoint=latest"]))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == 4 and len(resumed.losses) == 2
    assert all(math.isfinite(x) for x in resumed.losses)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    log = read_log(out / "logs" / "train_log.csv")
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
    assert all(float(r["peak_rss_mb"]) > 0 for r in log)

    # The resumed run matches an uninterrupted one exactly (same data order, same noise).
    straight = train_healthy(load_config(cfg, [f"output_dir={tmp_path / 'straight'}",
                                               "validation_steps=0", "validation_prompts=[]"]))
    np.testing.assert_allclose(resumed.losses, straight.losses[2:], rtol=1e-5)
    np.testing.assert_allclose([float(r["loss"]) for r in log[:2]], straight.losses[:2],
                               rtol=1e-5)

    # Validation grids: 2 prompts x 2 images of 32 px, at steps 2 and 4.
    grids = sorted((out / "validation").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-000002.png", "step-000004.png"]
    with Image.open(grids[-1]) as im:
        assert im.size == (2 * 32 + 2, 2 * 32 + 2)

    # The final pipeline loads and samples.
    pipe = load_pipeline(out)
    image = pipe("a hologic mammogram in CC view with small area", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    trained = pipe.unet.state_dict()
    first = load_pipeline(tmp_path / "straight").unet.state_dict()
    assert all(torch.allclose(trained[k], first[k], atol=1e-5) for k in trained)


@pytest.mark.slow
def test_runs_unchanged_under_accelerate_launch(prepared, tmp_path):
    """Two CPU processes (gloo) train, checkpoint, resume and save once, as on two GPUs."""
    out = tmp_path / "dist"
    cfg = write_config(tmp_path / "d.toml", TINY_KEYS.replace("batch_size = 4", "batch_size = 2")
                       + f'data_dir = "{prepared}"\noutput_dir = "{out}"\nmax_train_steps = 4\n'
                       'checkpointing_steps = 2\nvalidation_steps = 0\n')
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "mame_eval", "train", "healthy", str(cfg)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for steps in (2, 4):  # interrupted after step 2, then resumed to 4
        proc = subprocess.run([*launch, "--set", f"max_train_steps={steps}"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # one process speaks: the summary line is printed once, not once per process
        assert proc.stdout.count(f"trained healthy to step {steps}") == 1, proc.stdout
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    log = read_log(out / "logs" / "train_log.csv")
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["loss"])) for r in log)
    from mame_eval.models import load_pipeline

    assert load_pipeline(out).unet.config.in_channels == 4


def test_tensorboard_logging_and_memory_options(prepared, tmp_path):
    out = tmp_path / "tb"
    cfg = write_config(tmp_path / "t.toml", TINY_KEYS.replace('report_to = "none"',
                                                              'report_to = "tensorboard"') + (
        f'data_dir = "{prepared}"\noutput_dir = "{out}"\nmax_train_steps = 2\n'
        'gradient_accumulation_steps = 2\ntrain_text_encoder = false\n'
        'gradient_checkpointing = true\nmixed_precision = "bf16"\nuse_8bit_adam = true\n'))
    result = train_healthy(load_config(cfg))
    assert result.global_step == 2 and all(math.isfinite(x) for x in result.losses)
    # 8-bit AdamW is a CUDA-only bitsandbytes kernel: on the CPU the run says it fell back.
    assert result.optimizer == "AdamW" and any("8-bit" in note for note in result.notes)
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert len(read_log(out / "logs" / "train_log.csv")) == 2
    assert (out / "train_info.json").is_file()


def test_train_inpaint_widens_a_txt2img_base(prepared, tiny_txt2img, tmp_path):
    from mame_eval.models import load_pipeline

    out = tmp_path / "inpaint"
    cfg = write_config(tmp_path / "i.toml", TINY_KEYS.replace('"tiny"', f'"{tiny_txt2img}"') + (
        f'task = "inpaint"\ndata_dir = "{prepared}"\noutput_dir = "{out}"\n'
        'max_train_steps = 2\ncheckpointing_steps = 1\ncheckpoints_total_limit = 1\n'))
    first = train_inpaint(load_config(cfg, ["max_train_steps=1", "train_batch_size=2"],
                                      task="inpaint"))
    assert any("widened" in note for note in first.notes)
    resumed = train_inpaint(load_config(cfg, ["resume_from_checkpoint=latest",
                                              "train_batch_size=2"], task="inpaint"))
    assert resumed.global_step == 2 and resumed.resumed_from.endswith("checkpoint-1")
    assert all(math.isfinite(x) for x in first.losses + resumed.losses)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]  # total limit 1
    assert (out / "validation" / "step-000002.png").is_file()  # masked input + 2 samples
    pipe = load_pipeline(out, task="inpaint")
    assert pipe.unet.config.in_channels == 9


def test_train_refuses_a_mismatched_model(prepared, tiny_inpaint, tmp_path):
    cfg = write_config(tmp_path / "x.toml", TINY_KEYS.replace('"tiny"', f'"{tiny_inpaint}"') + (
        f'data_dir = "{prepared}"\noutput_dir = "{tmp_path / "x"}"\nmax_train_steps = 1\n'))
    with pytest.raises(ConfigError, match="9-channel"):
        train_healthy(load_config(cfg))
    with pytest.raises(ConfigError, match="fp16"):
        train_healthy(load_config(cfg, ["mixed_precision=fp16", 'pretrained_model="tiny"']))


def test_missing_data_is_one_clear_error(tmp_path):
    from mame_eval.errors import DataError

    config = TrainConfig(pretrained_model="tiny", data_dir=tmp_path / "nothing",
                         output_dir=tmp_path / "o", max_train_steps=1, resolution=32,
                         report_to="none")
    with pytest.raises(DataError, match="metadata.jsonl.*mame-eval prepare"):
        train_healthy(config)


@pytest.mark.slow
def test_overfit_eight_phantoms(tmp_path):
    """A tiny healthy model overfits 8 prepared phantoms: the loss falls by at least 50 %."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    write_phantom_dataset(tmp_path / "raw", n=8, seed=1, lesion_fraction=0.0, size=(160, 128))
    report = prepare_dataset(tmp_path / "raw", tmp_path / "data", PrepareSettings(size=64))
    assert report.counts["healthy"] == 8
    config = TrainConfig(pretrained_model="tiny", data_dir=tmp_path / "data",
                         output_dir=tmp_path / "out", resolution=32, train_batch_size=8,
                         max_train_steps=60, learning_rate=2e-3, checkpointing_steps=1000,
                         report_to="none", seed=0)
    result = train_healthy(config)
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-10:])
    print(f"overfit: loss {first:.3f} -> {last:.3f} ({1 - last / first:.0%} drop)")
    assert last <= 0.5 * first


# --------------------------------------------------------------------------- loss, precision


def test_masked_mse_against_a_numpy_reference():
    import torch.nn.functional as F

    from mame_eval.training.trainer import masked_mse

    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 4, 6, 5)), rng.normal(size=(2, 4, 6, 5))
    mask = (rng.random((2, 1, 6, 5)) < 0.3).astype(float)
    t = [torch.from_numpy(a) for a in (pred, target, mask)]
    for weight in (1.0, 2.5, 10.0):
        w = np.broadcast_to(1 + (weight - 1) * mask, pred.shape)
        expected = (w * (pred - target) ** 2).sum() / w.sum()
        assert masked_mse(*t, weight).item() == pytest.approx(expected, rel=1e-12)
    assert masked_mse(*t, 1.0).item() == pytest.approx(F.mse_loss(t[0], t[1]).item())
    # an error only inside the mask weighs more as the weight grows, one outside less
    inside = torch.from_numpy(target + mask * 0.5)
    outside = torch.from_numpy(target + (1 - mask) * 0.5)
    assert masked_mse(inside, t[1], t[2], 4.0) > masked_mse(inside, t[1], t[2], 1.0)
    assert masked_mse(outside, t[1], t[2], 4.0) < masked_mse(outside, t[1], t[2], 1.0)


def _loss_parts(tiny_inpaint):
    from mame_eval.training.config import TrainConfig as Config
    from mame_eval.training.trainer import load_components

    config = Config(pretrained_model=str(tiny_inpaint), data_dir="d", output_dir="o",
                    max_train_steps=1, resolution=32)
    return load_components(config, "inpaint")


def _batch(parts, n=2, res=32):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((n, 3, res, res), generator=generator) * 2 - 1
    mask = torch.zeros((n, 1, res, res))
    mask[:, :, 8:20, 10:22] = 1
    ids = parts["tokenizer"](["a mammogram with a lesion"] * n, padding="max_length",
                             max_length=parts["tokenizer"].model_max_length,
                             return_tensors="pt").input_ids
    return {"pixel_values": pixels, "masked_pixel_values": pixels * (mask < 0.5),
            "mask": mask, "input_ids": ids}


def test_loss_in_half_precision_matches_float32(tiny_inpaint):
    """Frozen VAE and text encoder in bf16 (as mixed precision leaves them), UNet in float32:
    every module gets its own dtype, the loss is float32 and close to the all-float32 one."""
    from mame_eval.training.trainer import _loss, step_generator

    parts = _loss_parts(tiny_inpaint)
    batch = _batch(parts)
    args = (parts["unet"], parts["noise_scheduler"])

    def loss(dtype, weight=1.0):
        # Copies: a round trip through bf16 would change the float32 weights themselves.
        vae, text = (copy.deepcopy(parts[k]).to(dtype) for k in ("vae", "text_encoder"))
        with torch.no_grad():
            return _loss(batch, vae, text, *args, dtype, 0.0, True, step_generator(0, 0, 0, 0),
                         mask_loss_weight=weight)

    full = loss(torch.float32)
    half = loss(torch.bfloat16)
    assert full.dtype == half.dtype == torch.float32
    assert math.isfinite(half.item()) and half.item() == pytest.approx(full.item(), rel=0.05)
    assert loss(torch.float32, 1.0).item() == pytest.approx(full.item(), rel=1e-6)  # same draw
    assert loss(torch.float32, 8.0).item() != pytest.approx(full.item(), rel=1e-3)


def test_mask_loss_weight_config(tmp_path):
    base = ('pretrained_model = "tiny"\ndata_dir = "d"\noutput_dir = "o"\nmax_train_steps = 1\n')
    cfg = write_config(tmp_path / "c.toml", base + "mask_loss_weight = 4.0\n")
    assert load_config(cfg, task="inpaint").mask_loss_weight == 4.0
    with pytest.raises(ConfigError, match="mask_loss_weight"):
        load_config(cfg, ["mask_loss_weight=0.5"])
    config = load_config(cfg, ["data_dir='nothing'"])
    with pytest.raises(ConfigError, match="mask_loss_weight.*inpaint"):
        train_healthy(config)


def test_train_inpaint_bf16_with_mask_loss_weight_saves_float32(prepared, tiny_inpaint,
                                                                tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "bf16"
    cfg = write_config(tmp_path / "b.toml", TINY_KEYS.replace('"tiny"', f'"{tiny_inpaint}"') + (
        f'data_dir = "{prepared}"\noutput_dir = "{out}"\nmax_train_steps = 2\n'
        'mixed_precision = "bf16"\nmask_loss_weight = 5.0\ntrain_text_encoder = false\n'
        'cache_latents = true\n'))
    result = train_inpaint(load_config(cfg, task="inpaint"))
    assert result.global_step == 2 and all(math.isfinite(x) for x in result.losses)
    for part in ("vae", "unet", "text_encoder"):
        files = list((out / part).glob("*.safetensors"))
        assert files, part
        dtypes = {t.dtype for t in load_file(files[0]).values()}
        assert dtypes == {torch.float32}, (part, dtypes)


def test_components_of_a_half_precision_pipeline_load_as_float32(tiny_inpaint, tmp_path):
    """The embedded models are saved in fp16: fine-tuning one must start from float32."""
    from mame_eval.models import load_pipeline
    from mame_eval.training.trainer import load_components

    pipe = load_pipeline(tiny_inpaint, task="inpaint", device="cpu")
    pipe.to(torch.float16)
    pipe.save_pretrained(tmp_path / "half", safe_serialization=True)
    config = TrainConfig(pretrained_model=str(tmp_path / "half"), data_dir="d",
                         output_dir="o", max_train_steps=1, resolution=32)
    parts = load_components(config, "inpaint")
    for name in ("vae", "unet", "text_encoder"):
        assert {p.dtype for p in parts[name].parameters()} == {torch.float32}, name


def test_export_a_checkpoint_without_the_data(prepared, tiny_inpaint, tmp_path):
    from safetensors.torch import load_file

    from mame_eval.models import load_pipeline
    from mame_eval.training.export import export_checkpoint

    out = tmp_path / "run"
    cfg = write_config(tmp_path / "e.toml", TINY_KEYS.replace('"tiny"', f'"{tiny_inpaint}"') + (
        f'data_dir = "{prepared}"\noutput_dir = "{out}"\nmax_train_steps = 2\n'
        'checkpointing_steps = 1\n'))
    config = load_config(cfg, task="inpaint")
    train_inpaint(config)
    # the data may be gone: the export reads only the checkpoint and the base model
    moved = load_config(cfg, ["data_dir='nowhere'"], task="inpaint")
    target = export_checkpoint(moved, "inpaint", "checkpoint-1", tmp_path / "exported")
    state = load_file(out / "checkpoint-1" / "model.safetensors")
    unet = load_pipeline(target, task="inpaint", device="cpu").unet.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(unet[key], value)
    final = load_pipeline(out, task="inpaint", device="cpu").unet.state_dict()
    assert any(not torch.equal(final[k], unet[k]) for k in state)  # step 1 ≠ step 2
    with pytest.raises(ConfigError, match="checkpoint-7"):
        export_checkpoint(moved, "inpaint", "checkpoint-7")
