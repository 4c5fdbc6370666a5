"""The embedded default: the model catalogue, installing assets, and the shipped models."""

import shutil

import pytest
import torch

from mame_eval.errors import ModelError
from mame_eval.models import catalog
from mame_eval.models.loading import (
    ASSETS,
    EMBEDDED_MAMMONET,
    EMBEDDED_MODELS,
    PUBLISHED_MODELS,
)

pytest_plugins = ["conftest_models"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_catalog_lists_the_embedded_models_and_every_published_id():
    rows = catalog()
    embedded = {r.name: r for r in rows if r.kind == "embedded"}
    assert set(embedded) == {"mame-tiny", "mame-tiny-inpaint", "mammonet-tiny"}
    assert {r.name for r in rows if r.kind == "published"} == set(PUBLISHED_MODELS)
    for r in embedded.values():
        marker = "config.json" if r.task == "cad" else "model_index.json"
        assert r.available == (ASSETS / r.name / marker).is_file()
    # offline and never downloaded: the published ids are not in this machine's cache
    assert all(not r.available for r in rows if r.kind == "published")


def test_cli_models_lists_without_a_subcommand():
    from typer.testing import CliRunner

    from mame_eval.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "mame-tiny-inpaint" in result.output and "Likalto4/fusion_healthy" in result.output
    assert result.output == CliRunner().invoke(app, ["models", "list"]).output


def test_install_writes_fp16_pipelines_that_load_in_fp32(tiny_txt2img, tiny_inpaint, tmp_path,
                                                         monkeypatch):
    from safetensors import safe_open

    from mame_eval.cad.model import MammoNet
    from mame_eval.models import load_pipeline
    from mame_eval.models.assets import folder_bytes, install

    torch.manual_seed(0)
    MammoNet(image_size=32, width=4, blocks=[1]).save_pretrained(tmp_path / "cad")
    shutil.copytree(tiny_txt2img, tmp_path / "src")
    tiny_txt2img = tmp_path / "src"
    (tiny_txt2img / "checkpoint-9").mkdir()  # a training run's leftovers are never copied
    sizes = install(tiny_txt2img, tiny_inpaint, tmp_path / "cad", assets=tmp_path / "assets")
    assert set(sizes) == {"mame-tiny", "mame-tiny-inpaint", "mammonet-tiny"}
    assert sum(sizes.values()) == folder_bytes(tmp_path / "assets")
    target = tmp_path / "assets" / "mame-tiny"
    assert not (target / "checkpoint-9").exists()
    with safe_open(str(target / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    original = load_pipeline(tiny_txt2img, device="cpu").unet.state_dict()
    shipped = load_pipeline(target, device="cpu")
    assert shipped.unet.dtype == torch.float32
    for key, value in shipped.unet.state_dict().items():
        torch.testing.assert_close(value, original[key].half().float())
    assert load_pipeline(tmp_path / "assets" / "mame-tiny-inpaint", task="inpaint",
                         device="cpu").unet.config.in_channels == 9
    MammoNet.from_pretrained(tmp_path / "assets" / "mammonet-tiny")
    # reinstalling replaces the folders whole
    install(tiny_txt2img, tiny_inpaint, tmp_path / "cad", assets=tmp_path / "assets")
    assert not list((tmp_path / "assets").glob(".*")) and not list(tmp_path.glob(".*"))
    # too large: refused before anything shipped is touched
    before = {p: p.read_bytes() for p in (tmp_path / "assets").rglob("*") if p.is_file()}
    monkeypatch.setattr("mame_eval.models.assets.MAX_ASSET_BYTES", 1000)
    with pytest.raises(ModelError, match="more than the 0 MB allowed.*nothing in"):
        install(tiny_txt2img, tiny_inpaint, tmp_path / "cad", assets=tmp_path / "assets")
    assert {p: p.read_bytes() for p in (tmp_path / "assets").rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".*"))


def test_install_one_model_keeps_the_others(tiny_txt2img, tiny_inpaint, tmp_path, monkeypatch):
    from mame_eval.cad.model import MammoNet
    from mame_eval.models.assets import folder_bytes, install

    torch.manual_seed(0)
    MammoNet(image_size=32, width=4, blocks=[1]).save_pretrained(tmp_path / "cad")
    assets = tmp_path / "assets"
    install(tiny_txt2img, tiny_inpaint, tmp_path / "cad", assets=assets)
    kept = {p: p.read_bytes() for p in assets.rglob("*")
            if p.is_file() and "mame-tiny-inpaint" not in p.parts}
    sizes = install(None, tiny_inpaint, None, assets=assets)
    assert set(sizes) == {"mame-tiny", "mame-tiny-inpaint", "mammonet-tiny"}
    assert sum(sizes.values()) == folder_bytes(assets)
    assert {p: p.read_bytes() for p in assets.rglob("*")
            if p.is_file() and "mame-tiny-inpaint" not in p.parts} == kept
    from mame_eval.models import load_pipeline

    assert load_pipeline(assets / "mame-tiny-inpaint", task="inpaint",
                         device="cpu").unet.config.in_channels == 9
    with pytest.raises(ModelError, match="nothing to install"):
        install(None, None, None, assets=assets)
    # the kept models count towards the limit
    monkeypatch.setattr("mame_eval.models.assets.MAX_ASSET_BYTES",
                        sum(sizes.values()) - sizes["mame-tiny-inpaint"] + 10)
    with pytest.raises(ModelError, match="more than"):
        install(None, tiny_inpaint, None, assets=assets)


def test_shipped_assets_stay_small():
    from mame_eval.models.assets import MAX_ASSET_BYTES, folder_bytes

    if not ASSETS.is_dir():
        pytest.skip("no assets in this checkout")
    assert folder_bytes(ASSETS) <= MAX_ASSET_BYTES


# --------------------------------------------------------------------------- the shipped models

shipped = pytest.mark.skipif(
    not all((p / "model_index.json").is_file() for p in EMBEDDED_MODELS.values())
    or not (EMBEDDED_MAMMONET / "config.json").is_file(),
    reason="the embedded models are not shipped in this checkout")


@pytest.fixture(scope="module")
def fresh_phantoms(tmp_path_factory):
    """Phantoms of a seed no shipped model was trained on, prepared at 128 px."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    root = tmp_path_factory.mktemp("fresh")
    write_phantom_dataset(root / "raw", n=160, seed=5, size=(320, 256), lesion_fraction=0.5)
    prepare_dataset(root / "raw", root / "prepared", PrepareSettings(size=128))
    return root


@pytest.mark.slow
@shipped
def test_shipped_mammonet_finds_lesions_and_attributes_on_unseen_phantoms(fresh_phantoms):
    from sklearn.metrics import roc_auc_score

    from mame_eval.cad.data import load_images, load_samples
    from mame_eval.cad.model import MammoNet
    from mame_eval.cad.train import evaluate

    model = MammoNet.from_pretrained(EMBEDDED_MAMMONET)
    samples, _ = load_samples(fresh_phantoms / "prepared",
                              fresh_phantoms / "raw" / "phantom_truth.csv")
    x = load_images([s.path for s in samples], model.image_size)
    result = evaluate(model, x, samples)
    with torch.no_grad():
        prob = torch.sigmoid(model(x)["lesion"]).numpy()
    truth = [int(s.lesion) for s in samples]
    assert result["lesion"]["auroc"] == pytest.approx(roc_auc_score(truth, prob))
    assert result["lesion"]["auroc"] >= 0.9  # the target for MammoNet on phantoms
    accuracy = {k: v["accuracy"] for k, v in result["attributes"].items()}
    assert accuracy["view"] >= 0.95 and accuracy["vendor"] >= 0.95
    assert accuracy["density"] >= 0.75 and accuracy["area"] >= 0.8


@pytest.mark.slow
@shipped
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shipped_mame_tiny_follows_its_prompts(tmp_path):
    """A small version of generation/tiny-adherence.toml (whose full figures are in the issue
    note): area is measured exactly, view and density by the shipped MammoNet-tiny."""
    from mame_eval.journeys.sweep import SweepConfig, run_sweep

    prompts = [f"a hologic mammogram in {view} view with {area} area"
               for view in ("CC", "MLO") for area in ("small", "big")]
    prompts += [f"a siemens mammogram in {view} view with {density} density"
                for view in ("CC", "MLO") for density in ("very low", "very high")]
    report = run_sweep(SweepConfig(name="t", out=tmp_path, prompts=prompts, guidance=[4.0], n=4,
                                   diversity=False))
    table = report.tables["fidelity"].set_index("attribute")
    assert table.loc["area", "n"] == 16 and table.loc["view", "n"] == 32
    assert table.loc["area", "accuracy"] >= 0.75
    assert table.loc["view", "accuracy"] >= 0.9
    assert table.loc["density", "accuracy"] >= 0.6
