"""The two-stage recipe of a model built from scratch: `train vae`, then `train healthy` with
``vae = …``, cached latents and prompt dropout."""

import csv
import math

import numpy as np
import pytest
import torch

from mame_eval.errors import ConfigError
from mame_eval.training import load_config, train_healthy
from mame_eval.training.trainer import drop_prompts
from mame_eval.training.vae import VaeTrainConfig, load_vae_config, train_vae

pytest_plugins = ["conftest_models"]
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def healthy_config(path, vae_dir, prepared, out, extra: str):
    """A 32-px tiny healthy-training TOML on the trained VAE, plus ``extra`` keys."""
    path.write_text(f'pretrained_model = "tiny"\nvae = "{vae_dir}"\ndata_dir = "{prepared}"\n'
                    f'output_dir = "{out}"\nresolution = 32\ntrain_batch_size = 4\n'
                    'report_to = "none"\n' + extra)
    return path


def vae_config(prepared, out, **kw) -> VaeTrainConfig:
    settings = dict(data_dir=prepared, output_dir=out, resolution=32, crop=16,
                    block_out_channels=[8, 16], train_batch_size=4, max_train_steps=4,
                    learning_rate=2e-3, checkpointing_steps=2, seed=0)
    return VaeTrainConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def trained_vae(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "vae"
    return train_vae(vae_config(prepared, out)), out


def test_train_vae_saves_an_autoencoder_with_unit_variance_latents(trained_vae, prepared):
    from diffusers import AutoencoderKL

    from mame_eval.training.vae import _image_files, _load_all

    result, out = trained_vae
    assert result.global_step == 4 and all(math.isfinite(x) for x in result.losses)
    vae = AutoencoderKL.from_pretrained(out).eval()
    assert vae.config.block_out_channels == (8, 16) or list(vae.config.block_out_channels) == [
        8, 16]
    # scaling_factor makes the latents of the training images unit-variance (as SD's 0.18215)
    images = _load_all(_image_files(prepared), 32)
    subset = images[np.linspace(0, len(images) - 1, min(len(images), 256)).astype(int)]
    with torch.no_grad():
        z = vae.encode(subset).latent_dist.mean
    assert vae.config.scaling_factor == pytest.approx(1 / float(z.std()), rel=1e-4)
    assert (z * vae.config.scaling_factor).std().item() == pytest.approx(1.0, rel=1e-4)
    assert (out / "reconstruction.png").is_file() and (out / "vae_info.json").is_file()
    with open(out / "logs" / "vae_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]


def test_train_vae_resumes_where_it_stopped(prepared, tmp_path):
    # A constant rate: stopping after 2 steps here stands for an interruption of a 4-step run.
    first = train_vae(vae_config(prepared, tmp_path / "a", max_train_steps=2,
                                 lr_scheduler="constant"))
    resumed = train_vae(vae_config(prepared, tmp_path / "a", max_train_steps=4,
                                   lr_scheduler="constant"))
    straight = train_vae(vae_config(prepared, tmp_path / "b", max_train_steps=4,
                                    lr_scheduler="constant"))
    assert resumed.resumed_from.endswith("checkpoint-2") and len(resumed.losses) == 2
    np.testing.assert_allclose(first.losses + resumed.losses, straight.losses, rtol=1e-4)


def test_vae_config_errors_name_the_key(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('data_dir = "d"\noutput_dir = "o"\nmax_train_steps = 2\ncrop = 30\n')
    with pytest.raises(ConfigError, match="crop 30 must be a multiple of 4"):
        load_vae_config(path)
    assert load_vae_config(path, ["crop=32"]).crop == 32
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'"):
        load_vae_config(path, ["crop=32", "learning_rat=1"])
    with pytest.raises(ConfigError, match="exceeds resolution"):
        load_vae_config(path, ["crop=256"])


def test_healthy_training_uses_the_given_vae_and_caches_latents_exactly(trained_vae, prepared,
                                                                        tmp_path):
    from mame_eval.models import load_pipeline

    _, vae_dir = trained_vae
    cfg = healthy_config(tmp_path / "h.toml", vae_dir, prepared, tmp_path / "plain",
                         "max_train_steps = 3\nlearning_rate = 1e-3\nprompt_dropout = 0.5\n")
    plain = train_healthy(load_config(cfg))
    cached = train_healthy(load_config(cfg, ["cache_latents=true",
                                             f"output_dir={tmp_path / 'cached'}"]))
    # Cached posteriors, sampled with the same generator: the same latents, the same losses.
    np.testing.assert_allclose(cached.losses, plain.losses, rtol=1e-4)
    assert not any("VAE is random" in n for n in plain.notes)
    pipe = load_pipeline(tmp_path / "cached")
    from diffusers import AutoencoderKL

    given = AutoencoderKL.from_pretrained(vae_dir).state_dict()
    assert all(torch.equal(v, given[k]) for k, v in pipe.vae.state_dict().items())
    assert pipe.unet.config.sample_size == 16  # 32 px through the VAE's 2x downsampling
    with pytest.raises(ConfigError, match="no AutoencoderKL"):
        train_healthy(load_config(cfg, [f"vae={tmp_path}"]))


def test_a_random_vae_is_reported(prepared, tmp_path):
    cfg = tmp_path / "h.toml"
    cfg.write_text(f'pretrained_model = "tiny"\ndata_dir = "{prepared}"\noutput_dir = '
                   f'"{tmp_path / "o"}"\nresolution = 32\nmax_train_steps = 1\nreport_to = "none"\n'
                   "lr_warmup_steps = 50\n")
    result = train_healthy(load_config(cfg))
    assert any("VAE is random" in n for n in result.notes)
    assert any("warm-up shortened to 1" in n for n in result.notes)


def test_prompt_dropout_replaces_a_share_of_prompts_by_the_empty_one():
    ids = torch.arange(4000 * 5).reshape(4000, 5)
    empty = torch.full((5,), -1)
    assert drop_prompts(ids, 0.0, empty, torch.Generator().manual_seed(0)) is ids
    out = drop_prompts(ids, 0.1, empty, torch.Generator().manual_seed(0))
    dropped = (out == -1).all(1)
    kept = (out == ids).all(1)
    assert bool((dropped | kept).all())
    assert 0.08 < dropped.float().mean().item() < 0.12  # binomial(4000, 0.1): sd 0.005
    again = drop_prompts(ids, 0.1, empty, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # from the step's generator: resumable


def test_a_checkpoint_of_another_architecture_is_one_clear_error(trained_vae, prepared,
                                                                  tmp_path):
    import shutil

    _, out = trained_vae
    shutil.copytree(out, tmp_path / "v")
    with pytest.raises(ConfigError, match="cannot resume from this checkpoint.*architecture"):
        train_vae(vae_config(prepared, tmp_path / "v", block_out_channels=[8, 8],
                             max_train_steps=6))


def test_a_zero_terminal_snr_model_trains_and_samples_with_v_prediction(trained_vae, prepared,
                                                                         tmp_path):
    from mame_eval.models import load_pipeline

    _, vae_dir = trained_vae
    cfg = healthy_config(tmp_path / "z.toml", vae_dir, prepared, tmp_path / "z",
                         "max_train_steps = 2\ntiny = { zero_terminal_snr = true }\n")
    result = train_healthy(load_config(cfg))
    assert all(math.isfinite(x) for x in result.losses)
    pipe = load_pipeline(tmp_path / "z", device="cpu")
    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert config.timestep_spacing == "trailing"
    import json

    saved = json.loads((tmp_path / "z" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["clip_sample"] is False  # latents are not images in [-1, 1] (as SD's config)
    pipe.scheduler.set_timesteps(4)
    assert int(pipe.scheduler.timesteps[0]) == 999  # sampling starts from pure noise
    image = pipe("a hologic mammogram in CC view with small area", num_inference_steps=4,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.isfinite(image).all()


# ----------------------------------------------------------------- decoder fine-tuning (issue 17)


def test_decoder_fine_tuning_keeps_the_encoder_and_the_scaling_factor(trained_vae, prepared,
                                                                      tmp_path):
    from diffusers import AutoencoderKL

    _, base = trained_vae
    result = train_vae(vae_config(prepared, tmp_path / "d", pretrained_vae=base,
                                  train_decoder_only=True, lesion_crop_fraction=0.5,
                                  lesion_weight=1.0, learning_rate=1e-2, max_train_steps=3))
    before = AutoencoderKL.from_pretrained(base).state_dict()
    after = AutoencoderKL.from_pretrained(tmp_path / "d").state_dict()
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and trained and len(frozen) + len(trained) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # a UNet's latents keep meaning
    assert sum(not torch.equal(before[k], after[k]) for k in trained) > len(trained) // 2
    # The factor the UNets were trained with, not a new estimate.
    base_factor = AutoencoderKL.from_pretrained(base).config.scaling_factor
    assert result.scaling_factor == base_factor
    assert AutoencoderKL.from_pretrained(tmp_path / "d").config.scaling_factor == base_factor


def test_lesion_crops_are_centred_on_the_lesion_boxes(prepared):
    from mame_eval.training.vae import _batch, _image_files, _lesion_masks, _load_all

    files = _image_files(prepared)
    images = _load_all(files, 64)
    masks, boxes = _lesion_masks(prepared, files, 64)
    assert boxes and all(files[i].parent.name == "images" for i, _ in boxes)
    # every box lies on its own mask, healthy images have none
    for i, (x0, y0, x1, y1) in boxes:
        cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
        assert masks[i, max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3].any()
    assert not masks[[i for i, f in enumerate(files) if f.parent.name == "healthy"]].any()
    config = vae_config(prepared, "o", crop=32, train_batch_size=8, lesion_crop_fraction=0.5)
    x, m = _batch(images, config, torch.Generator().manual_seed(0), masks, boxes)
    assert x.shape == (8, 3, 32, 32) and m.shape == (8, 1, 32, 32)
    # the first half are lesion crops: each holds lesion pixels near its centre (jitter ±8)
    assert all(float(m[k, 0, 4:28, 4:28].sum()) > 0 for k in range(4))


def test_decoder_only_and_lesion_keys_fail_clearly(trained_vae, prepared, tmp_path):
    _, base = trained_vae
    with pytest.raises(ConfigError, match="train_decoder_only = true needs pretrained_vae"):
        load_vae_config(_toml(tmp_path, "train_decoder_only = true\n"))
    with pytest.raises(ConfigError, match="pretrained_vae = .*no AutoencoderKL there"):
        train_vae(vae_config(prepared, tmp_path / "z", pretrained_vae=tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"block_out_channels = \[8, 8\] disagrees with "
                                          r"pretrained_vae"):
        train_vae(vae_config(prepared, tmp_path / "x", pretrained_vae=base,
                             block_out_channels=[8, 8]))
    healthy_only = tmp_path / "healthy-only"
    (healthy_only / "healthy").mkdir(parents=True)
    import shutil

    for f in sorted((prepared / "healthy").glob("*.png"))[:2]:
        shutil.copy(f, healthy_only / "healthy")
    from mame_eval.errors import DataError

    with pytest.raises(DataError, match="need lesion samples"):
        train_vae(vae_config(healthy_only, tmp_path / "y", lesion_crop_fraction=0.5))


def _toml(tmp_path, extra: str):
    path = tmp_path / "v.toml"
    path.write_text('data_dir = "d"\noutput_dir = "o"\nmax_train_steps = 2\n' + extra)
    return path
