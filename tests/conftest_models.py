"""Fixtures shared by the model, training and generation tests (loaded via ``pytest_plugins``).

Everything is built on the fly and tiny (32-px images, 1-layer blocks), offline.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TINY_RES = 32
PROMPT = "a hologic mammogram in CC view with small area"


@pytest.fixture
def one_thread():
    """Run a test with one intra-op torch thread, then restore the setting.

    The tiny models gain nothing from intra-op parallelism, and on a busy 2-core machine
    OpenMP threads spin-waiting for a core made these tests up to 7x slower (measured: the
    resume test took 75 s with 2 threads and 11 s with 1 while other jobs ran). Used with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` by our modules only, so other
    test modules keep torch's default.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A prepared dataset (64-px) from 12 small phantoms: healthy and lesion samples."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    root = tmp_path_factory.mktemp("prepared")
    write_phantom_dataset(root / "raw", n=12, seed=0, population="mixed", lesion_fraction=0.5,
                          size=(160, 128))
    report = prepare_dataset(root / "raw", root / "data", PrepareSettings(size=64))
    assert report.counts["healthy"] >= 4 and report.counts["lesion_samples"] >= 2
    return root / "data"


@pytest.fixture(scope="session")
def tiny_txt2img(tmp_path_factory):
    """A saved tiny random text-to-image pipeline (32 px)."""
    from mame_eval.models import TinySpec, save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "txt2img", "txt2img", seed=0,
                              spec=TinySpec(resolution=TINY_RES))


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory):
    """A saved tiny random inpainting pipeline (9-channel UNet, 32 px)."""
    from mame_eval.models import TinySpec, save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "inpaint", "inpaint", seed=0,
                              spec=TinySpec(resolution=TINY_RES))


@pytest.fixture(scope="session")
def txt2img_pipe(tiny_txt2img):
    from mame_eval.models import load_pipeline

    return load_pipeline(tiny_txt2img, task="txt2img", device="cpu")


@pytest.fixture(scope="session")
def inpaint_pipe(tiny_inpaint):
    from mame_eval.models import load_pipeline

    return load_pipeline(tiny_inpaint, task="inpaint", device="cpu")
