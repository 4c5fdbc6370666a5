"""MammoNet: save/load, config validation, a short training run and its metrics.json."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mame_eval.cad.data import load_samples, split_by_source
from mame_eval.cad.model import ATTRIBUTES, MammoNet, MammoNetConfig
from mame_eval.cad.train import load_cad_config, train_cad
from mame_eval.config import apply_overrides
from mame_eval.errors import ConfigError, DataError, ModelError
from mame_eval.io import write_jsonl


@pytest.mark.parametrize("settings", [
    {"image_size": 48, "width": 4, "blocks": [1, 2]},
    {"image_size": 48, "width": 4, "stem": "patch", "pool": "max", "blocks": [1, 1, 1]},
])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, settings):
    torch.manual_seed(0)
    net = MammoNet(**settings).eval()
    x = torch.rand(2, 1, 48, 48)
    net.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    loaded = MammoNet.from_pretrained(tmp_path / "m")
    assert not loaded.training
    a, b = net(x), loaded(x)
    assert set(a) == {"lesion", "lesion_map", *ATTRIBUTES}
    assert a["lesion"].shape == (2,) and a["density"].shape == (2, 4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_resnet18_backbone_has_one_channel_stem():
    net = MammoNet(arch="resnet18", image_size=64).eval()
    out = net(torch.rand(1, 1, 64, 64))
    assert out["view"].shape == (1, 2) and out["vendor"].shape == (1, 2)
    assert net.gradcam_layer_name == "features.stage4"


def test_bad_model_settings_and_folders(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'depth'"):
        MammoNet(depth=3)
    with pytest.raises(ConfigError, match="gradcam_layer"):
        MammoNet(MammoNetConfig(image_size=32, gradcam_layer="features.nope"))
    with pytest.raises(ModelError, match="model.safetensors missing"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "config.json").write_text("{}")
        MammoNet.from_pretrained(tmp_path / "x")
    net = MammoNet(image_size=32, width=4)
    net.save_pretrained(tmp_path / "y")
    cfg = json.loads((tmp_path / "y" / "config.json").read_text())
    cfg["width"] = 8
    (tmp_path / "y" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="weights do not fit"):
        MammoNet.from_pretrained(tmp_path / "y")


# -- a tiny prepared dataset, written by hand ------------------------------------------------


def _write_prepared(root, n_per_class=8, size=32, seed=0):
    """Healthy: noise. Lesion: noise + a bright square (box mask). Alternating attributes."""
    rng = np.random.default_rng(seed)
    healthy, lesion = [], []
    (root / "healthy").mkdir(parents=True)
    (root / "lesion" / "images").mkdir(parents=True)
    (root / "lesion" / "masks").mkdir(parents=True)
    views, densities = ("CC", "MLO"), ("very low", "low", "high", "very high")
    for i in range(2 * n_per_class):
        img = (rng.random((size, size)) * 120).astype(np.uint8)
        fields = {"vendor": ("hologic", "siemens")[i % 2], "view": views[(i // 2) % 2],
                  "laterality": "L", "density": None if i % 2 == 0 else densities[i % 4],
                  "area": ("small", "medium", "big")[i % 3], "area_ratio": 0.5,
                  "source_id": f"src{i}"}
        if i < n_per_class:
            Image.fromarray(np.stack([img] * 3, -1)).save(root / "healthy" / f"src{i}.png")
            healthy.append({"file_name": f"src{i}.png", "prompt": "p", **fields})
        else:
            y, x = rng.integers(2, size - 10, 2)
            img[y:y + 8, x:x + 8] = 250
            mask = np.zeros((size, size), np.uint8)
            mask[y:y + 8, x:x + 8] = 255
            name = f"src{i}_m0.png"
            Image.fromarray(np.stack([img] * 3, -1)).save(root / "lesion" / "images" / name)
            Image.fromarray(mask).save(root / "lesion" / "masks" / name)
            lesion.append({"file_name": f"images/{name}", "mask_file": f"masks/{name}",
                           "prompt": "a mammogram with a lesion",
                           "box": [int(x), int(y), int(x) + 8, int(y) + 8], **fields})
    write_jsonl(root / "healthy" / "metadata.jsonl", healthy)
    write_jsonl(root / "lesion" / "metadata.jsonl", lesion)
    return root


@pytest.fixture
def prepared(tmp_path):
    return _write_prepared(tmp_path / "prep")


def _config(prepared, out, **extra):
    return {"data_dir": str(prepared), "output_dir": str(out), "image_size": 32,
            "epochs": 2, "batch_size": 4, "val_fraction": 0.25,
            "model": {"width": 4, "blocks": [1, 1]}, **extra}


def test_config_validation(tmp_path, prepared):
    path = tmp_path / "cad.toml"
    path.write_text(f'data_dir = "{prepared}"\noutput_dir = "{tmp_path / "o"}"\n'
                    "epochs = 3\n[model]\nwidth = 8\n")
    cfg = load_cad_config(path, ["epochs=5", "model.blocks=[1, 1]", "lr=1e-3"])
    assert cfg.epochs == 5 and cfg.model == {"width": 8, "blocks": [1, 1]} and cfg.lr == 1e-3
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_cad_config(path, ["epoch=5"])
    with pytest.raises(ConfigError, match="model"):
        load_cad_config(path, ["model.depth=5"])
    with pytest.raises(ConfigError, match="image_size at the top level"):
        load_cad_config(path, ["model.image_size=64"])
    with pytest.raises(ConfigError, match="batch_size = 0: "):
        load_cad_config(path, ["batch_size=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load_cad_config(path, ["epochs"])
    with pytest.raises(ConfigError, match="file not found"):
        load_cad_config(tmp_path / "missing.toml")
    assert apply_overrides({"a": 1}, ["b.c=hello world"]) == {"a": 1, "b": {"c": "hello world"}}


def test_split_keeps_sources_together(prepared):
    samples, report = load_samples(prepared)
    assert report["n_healthy"] == 8 and report["n_lesion"] == 8
    train, val = split_by_source(samples, 0.25, seed=0)
    assert sorted(train + val) == list(range(16))
    assert {samples[i].source_id for i in train}.isdisjoint({samples[i].source_id for i in val})
    assert sum(samples[i].lesion for i in val) == 2 and len(val) == 4
    assert split_by_source(samples, 0.25, seed=0) == (train, val)


def test_labels_csv_overrides_missing_density(tmp_path, prepared):
    samples, _ = load_samples(prepared)
    assert sum(s.labels["density"] < 0 for s in samples) == 8
    csv_path = tmp_path / "truth.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "vendor", "density", "area_ratio"])
        for i in range(16):
            w.writerow([f"src{i}", "hologic" if i % 2 == 0 else "siemens", "ABCD"[i % 4], 0.5])
    samples, report = load_samples(prepared, csv_path)
    assert report["labels_overridden"] == 16
    by_source = {s.source_id: s for s in samples}
    assert by_source["src4"].labels["density"] == 0  # letter A → "very low"
    assert by_source["src7"].labels["density"] == 3  # letter D → "very high"
    with open(csv_path, "a") as fh:
        fh.write("src1,siemens,Z,0.5\n")
    with pytest.raises(DataError, match="density"):
        load_samples(prepared, csv_path)


def test_training_a_few_steps_writes_model_and_metrics(tmp_path, prepared):
    out = tmp_path / "cad"
    result = train_cad(_config(prepared, out))
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "history.jsonl", "split.csv",
            "training_config.json", "provenance.json"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 12 and metrics["n_val"] == 4 and metrics["steps"] == 6
    lesion = metrics["lesion"]
    assert lesion["n_pos"] == 2 and lesion["n_neg"] == 2
    assert 0 <= lesion["ci"][0] <= lesion["auroc"] <= lesion["ci"][1] <= 1
    for name in ATTRIBUTES:
        entry = metrics["attributes"][name]
        assert entry["n"] + entry["n_unlabelled"] == 4
    with open(out / "split.csv") as fh:
        val = [r["source_id"] for r in csv.DictReader(fh) if r["split"] == "val"]
    # even sources have no density label (like Hologic images): not counted
    assert metrics["attributes"]["density"]["n"] == sum(int(s[3:]) % 2 for s in val)
    # the saved model reproduces the in-memory one
    loaded = MammoNet.from_pretrained(out)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x)["lesion"], result.model(x)["lesion"])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inputs"]["images"]["n_files"] == 16 and "torch" in prov["versions"]


def test_training_is_deterministic(tmp_path, prepared):
    a = train_cad(_config(prepared, tmp_path / "a", max_steps=3))
    b = train_cad(_config(prepared, tmp_path / "b", max_steps=3))
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a.metrics["lesion"] == b.metrics["lesion"]


def test_training_rejects_a_dataset_without_lesions(tmp_path, prepared):
    write_jsonl(prepared / "lesion" / "metadata.jsonl", [])
    with pytest.raises(DataError, match="needs both healthy and lesion"):
        train_cad(_config(prepared, tmp_path / "o"))
