"""Model loading, the tiny SD-family models and the offline CLIP tokenizer."""

import itertools
import json
import subprocess
import sys

import pytest
import torch

from mame_eval.errors import ModelError
from mame_eval.models import (
    SCHEDULERS,
    build_tokenizer,
    create_tiny_pipeline,
    load_pipeline,
    make_scheduler,
    model_revision,
    prompt_words,
)
from mame_eval.prompts import INPAINT_PROMPT, Area, Density, Family, Prompt, Vendor, View

pytest_plugins = ["conftest_models"]
# diffusers' schedulers call np.array(tensor, copy=False) internally: not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def all_grammar_prompts():
    """Every prompt of the published grammar (DESIGN §1), built from the enums."""
    out = [INPAINT_PROMPT]
    for view in View:
        out += [Prompt(Family.HOLOGIC, view=view, area=a).render() for a in Area]
        out += [Prompt(Family.SIEMENS, view=view, density=d).render() for d in Density]
        for vendor, d, a, first in itertools.product(Vendor, Density, Area, (True, False)):
            out.append(Prompt(Family.FUSION, view=view, vendor=vendor, density=d, area=a,
                              density_first=first).render())
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


# --------------------------------------------------------------------------- tokenizer


def test_every_grammar_word_is_one_known_token(tokenizer):
    prompts = all_grammar_prompts()
    assert len(prompts) > 100
    unk = tokenizer.unk_token_id
    for prompt in prompts:
        ids = tokenizer(prompt).input_ids
        words = prompt.lower().split()
        # <|startoftext|> + one token per word + <|endoftext|>, none of them unknown
        assert len(ids) == len(words) + 2, prompt
        assert unk not in ids[1:-1]
        assert tokenizer.decode(ids, skip_special_tokens=True) == prompt.lower()


def test_distinct_words_get_distinct_tokens(tokenizer):
    words = prompt_words()
    ids = [tokenizer(w).input_ids[1] for w in words]
    assert len(set(ids)) == len(words)
    for word in ("white", "background", "blurry", "lesion", "siemens", "mlo"):
        assert word in words


def test_negative_prompt_and_unknown_words_degrade_gracefully(tokenizer):
    assert len(tokenizer("white background").input_ids) == 4
    # An unknown ASCII word is spelled out from known characters (no unknown token) ...
    ids = tokenizer("zebra").input_ids
    assert tokenizer.unk_token_id not in ids[1:-1] and len(ids) > 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == "zebra"
    # ... characters outside printable ASCII become the unknown token, never an exception.
    ids = tokenizer("café 日本 ∞").input_ids
    assert ids.count(tokenizer.unk_token_id) >= 3
    batch = tokenizer(["", "a" * 500], padding="max_length", truncation=True,
                      max_length=tokenizer.model_max_length)
    assert all(len(x) == 77 for x in batch.input_ids)


def test_tokenizer_is_deterministic_and_round_trips(tokenizer, tmp_path):
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()
    from transformers import CLIPTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    text = "A Siemens mammogram in MLO view with very high density, white background"
    assert again(text).input_ids == tokenizer(text).input_ids
    assert again.model_max_length == 77


# --------------------------------------------------------------------------- tiny models


def test_tiny_pipelines_are_the_sd_family():
    from diffusers import (
        AutoencoderKL,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    txt = create_tiny_pipeline("txt2img", seed=0)
    inp = create_tiny_pipeline("inpaint", seed=0)
    assert isinstance(txt, StableDiffusionPipeline)
    assert isinstance(inp, StableDiffusionInpaintPipeline)
    for pipe, channels in ((txt, 4), (inp, 9)):
        assert isinstance(pipe.vae, AutoencoderKL)
        assert isinstance(pipe.unet, UNet2DConditionModel)
        assert isinstance(pipe.text_encoder, CLIPTextModel)
        assert isinstance(pipe.tokenizer, CLIPTokenizer)
        assert pipe.unet.config.in_channels == channels
        assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
        assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
        assert pipe.safety_checker is None
        # SD v1.5's noise schedule
        assert pipe.scheduler.config.beta_schedule == "scaled_linear"
        assert pipe.scheduler.config.beta_end == pytest.approx(0.012)


def test_tiny_weights_depend_only_on_the_seed():
    state = torch.get_rng_state()
    a = create_tiny_pipeline("txt2img", seed=1).unet.state_dict()
    b = create_tiny_pipeline("txt2img", seed=1).unet.state_dict()
    c = create_tiny_pipeline("txt2img", seed=2).unet.state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_save_and_load_round_trip(tiny_txt2img, txt2img_pipe):
    from diffusers import DPMSolverMultistepScheduler

    reference = create_tiny_pipeline("txt2img", seed=0)
    assert (tiny_txt2img / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = txt2img_pipe.unet.state_dict()
    ref = reference.unet.state_dict()
    assert loaded.keys() == ref.keys()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)
    text = txt2img_pipe.text_encoder.state_dict()
    assert all(torch.equal(text[k], v) for k, v in reference.text_encoder.state_dict().items())
    assert isinstance(txt2img_pipe.scheduler, DPMSolverMultistepScheduler)
    assert txt2img_pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert txt2img_pipe.unet.dtype == torch.float32 and txt2img_pipe.device.type == "cpu"
    assert txt2img_pipe.mame_source.revision.startswith("sha256:")


def test_revision_is_a_content_hash(tiny_txt2img, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_txt2img, copy)
    (copy / "checkpoint-5").mkdir()  # training leftovers are not part of the model
    (copy / "checkpoint-5" / "model.safetensors").write_bytes(b"x")
    assert model_revision(copy) == model_revision(tiny_txt2img)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_revision(copy) != model_revision(tiny_txt2img)


# --------------------------------------------------------------------------- loading errors


def test_wrong_task_is_refused(tiny_txt2img, tiny_inpaint):
    with pytest.raises(ModelError, match="4 input channels"):
        load_pipeline(tiny_txt2img, task="inpaint")
    with pytest.raises(ModelError, match="9 input channels"):
        load_pipeline(tiny_inpaint, task="txt2img")
    with pytest.raises(ModelError, match="task"):
        load_pipeline(tiny_txt2img, task="video")


def test_offline_hub_id_names_what_was_looked_for():
    with pytest.raises(ModelError) as err:
        load_pipeline("Likalto4/no-such-model-for-tests")
    message = str(err.value)
    assert "\n" not in message
    for part in ("Likalto4/no-such-model-for-tests", "model_index.json", "HF_HOME", "offline",
                 "local"):
        assert part in message


def test_bad_local_paths(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        load_pipeline(tmp_path / "missing" / "model")
    with pytest.raises(ModelError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_schedulers_by_name(txt2img_pipe):
    import diffusers

    for name, (cls_name, extra) in SCHEDULERS.items():
        scheduler = make_scheduler(name, txt2img_pipe.scheduler.config)
        assert type(scheduler) is getattr(diffusers, cls_name), name
        for key, value in extra.items():
            assert scheduler.config[key] == value
    assert type(make_scheduler("DDIMScheduler", txt2img_pipe.scheduler.config)).__name__ == \
        "DDIMScheduler"
    with pytest.raises(ModelError, match="dpm\\+\\+"):
        make_scheduler("fastest", txt2img_pipe.scheduler.config)


def test_no_model_means_the_embedded_one(monkeypatch, tiny_txt2img, tmp_path):
    from mame_eval.models import loading

    monkeypatch.setattr(loading, "EMBEDDED_MODELS", {"txt2img": tmp_path / "absent",
                                                    "inpaint": tmp_path / "absent"})
    with pytest.raises(ModelError, match="--model"):
        load_pipeline(None)
    monkeypatch.setattr(loading, "EMBEDDED_MODELS", {"txt2img": tiny_txt2img,
                                                    "inpaint": tmp_path / "absent"})
    assert load_pipeline(None).mame_source.path == str(tiny_txt2img)


def test_xformers_needs_cuda(tiny_txt2img):
    with pytest.raises(ModelError, match="xformers"):
        load_pipeline(tiny_txt2img, attention="xformers", device="cpu")


def test_cli_create_tiny_then_load(tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    out = tmp_path / "tiny-inpaint"
    result = CliRunner().invoke(app, ["models", "create-tiny", str(out), "--task", "inpaint",
                                      "--seed", "3", "--resolution", "32"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "tiny_spec.json").read_text())["seed"] == 3
    assert load_pipeline(out, task="inpaint").unet.config.in_channels == 9
    again = CliRunner().invoke(app, ["models", "create-tiny", str(out)])
    assert again.exit_code != 0  # refuses to overwrite


def test_cli_missing_model_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mame_eval", "generate", "--model", "Likalto4/not-cached",
         "--prompt", "a mammogram in CC view with small area", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Likalto4/not-cached" in errors[0] and "HF_HOME" in errors[0]
    assert "Traceback" not in proc.stderr
