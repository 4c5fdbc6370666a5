"""Feature extractors and their content-addressed cache."""

import numpy as np
import pytest
import torch
from PIL import Image

from mame_eval.errors import InputError, ModelError
from mame_eval.images import list_images
from mame_eval.metrics.features import extract_features, load_extractor


class MeanStd(torch.nn.Module):
    """Contract: float32 N×3×H×W in [0, 1] → N×d."""

    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], dim=1)


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        arr = rng.integers(0, 256, (24, 20), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_torchscript_extractor_follows_the_contract(folder, tmp_path):
    path = tmp_path / "ext.pt"
    torch.jit.script(MeanStd()).save(str(path))
    extractor = load_extractor(str(path))
    files = list_images(folder)
    assert [f.name for f in files] == [f"img{i}.png" for i in range(5)]
    feats = extract_features(files, extractor, batch_size=2)
    gray = np.stack([np.asarray(Image.open(f), np.float64) / 255 for f in files])
    np.testing.assert_allclose(feats[:, 0], gray.mean((1, 2)), atol=1e-6)


def test_cache_is_keyed_by_content(folder, tmp_path):
    path = tmp_path / "ext.pt"
    torch.jit.script(MeanStd()).save(str(path))
    extractor = load_extractor(str(path))
    calls = []
    original = extractor.fn
    extractor.fn = lambda b: calls.append(len(b)) or original(b)
    files = list_images(folder)
    cache = tmp_path / "cache"
    first = extract_features(files, extractor, cache_dir=cache)
    second = extract_features(files, extractor, cache_dir=cache)
    assert len(calls) == 1 and np.array_equal(first, second)
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(files[0])  # new bytes -> new key
    third = extract_features(files, extractor, cache_dir=cache)
    assert len(calls) == 2 and not np.array_equal(first, third)


def test_missing_inception_weights_name_what_was_looked_for(tmp_path):
    with pytest.raises(ModelError, match="--inception-weights") as err:
        load_extractor("inception", inception_weights=tmp_path / "none.pth")
    assert "none.pth" in str(err.value)


def test_bad_specs(tmp_path):
    with pytest.raises(InputError, match="--features 'vgg'"):
        load_extractor("vgg")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="TorchScript"):
        load_extractor(str(bad))
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path)


def _export(tmp_path, batch, dynamic: bool):
    example = (torch.rand(batch, 3, 24, 20),)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    program = torch.export.export(MeanStd(), example, dynamic_shapes=shapes)
    path = tmp_path / f"ext-{batch}-{dynamic}.pt2"
    torch.export.save(program, str(path))
    return path


@pytest.mark.parametrize(("batch", "dynamic"), [(2, True), (1, False), (3, False)])
def test_torch_export_program_follows_the_same_contract(folder, tmp_path, batch, dynamic):
    path = _export(tmp_path, batch, dynamic)
    extractor = load_extractor(str(path))
    files = list_images(folder)
    # 5 images in batches of 2: a fixed-batch program gets chunks of its size, padded
    feats = extract_features(files, extractor, batch_size=2)
    gray = np.stack([np.asarray(Image.open(f), np.float64) / 255 for f in files])
    assert feats.shape == (5, 2)
    np.testing.assert_allclose(feats[:, 0], gray.mean((1, 2)), atol=1e-6)
    script = tmp_path / "ext.pt"
    torch.jit.script(MeanStd()).save(str(script))
    np.testing.assert_allclose(feats, extract_features(files, load_extractor(str(script))),
                               atol=1e-6)
    assert extractor.identity.startswith("export:") and extractor.identity != "export:"


def test_bad_export_programs(folder, tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="torch.export"):
        load_extractor(str(bad))
    path = _export(tmp_path, 2, True)
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small / "a.png")
    # the exported graph is specialised to 24×20 images: an 8×8 one is refused clearly
    with pytest.raises(ModelError, match="refused an input of shape"):
        extract_features(list_images(small), load_extractor(str(path)))
