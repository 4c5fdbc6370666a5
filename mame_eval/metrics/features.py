"""Feature extractors for FID/KID, and a content-addressed on-disk cache of their features.

Three kinds, chosen by one string:

* ``inception`` — torch-fidelity's InceptionV3 (the standard FID network, pool3, 2048-d).
  Inputs are resized to 299×299 with torch-fidelity's TensorFlow-1.x-compatible bilinear
  resize (the reference FID implementation's resize mode). Its weights are never downloaded
  here: pass ``inception_weights=PATH`` or place the file in the torch hub cache.
* ``mammonet`` / a MammoNet folder — the penultimate features of a MammoNet classifier
  (:mod:`mame_eval.cad`), a domain-specific alternative to ImageNet features.
* ``PATH.pt`` — any TorchScript module, or ``PATH.pt2`` — a ``torch.export`` program
  (``torch.export.save``; TorchScript is deprecated since torch 2.14), with the contract:
  float32 N×3×H×W in [0, 1] at the images' own size (gray replicated to 3 channels) → N×d.
  Export with a dynamic batch dimension (``torch.export.Dim``) or with a fixed batch size
  b: batches are then cut into chunks of b (the last one padded and the padding dropped).

Features of a set of files are cached under ``cache_dir`` by the SHA-256 of the extractor's
identity and of every file's bytes, so a sweep extracts the real reference set once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mame_eval.errors import InputError, ModelError
from mame_eval.images import load_rgb
from mame_eval.io import atomic_path, file_sha256

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@dataclass
class FeatureExtractor:
    """A named feature function over uint8 RGB batches (N, H, W, 3) → float64 (N, d).

    ``identity`` changes whenever the features could (weights hash, settings); it keys the
    cache. ``resize`` says how inputs are resized, for provenance.
    """

    name: str
    identity: str
    fn: Callable[[np.ndarray], np.ndarray]
    resize: str = "none (images' own size)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(batch), dtype=np.float64)


def _inception(weights: Path | None, device: str) -> FeatureExtractor:
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    looked = []
    if weights is not None:
        looked.append(Path(weights))
    else:
        looked.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    found = next((p for p in looked if p.is_file()), None)
    if found is None:
        raise ModelError(
            f"InceptionV3 FID weights not found (looked for {', '.join(map(str, looked))}); "
            f"offline, nothing is downloaded: pass --inception-weights PATH to {INCEPTION_FILE} "
            "(torch-fidelity's release file), or use --features mammonet")
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=str(found)).to(device)

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
        with torch.no_grad():
            (feats,) = model(x)
        return feats.double().cpu().numpy()

    return FeatureExtractor("inception", f"inception:{file_sha256(found)}", fn,
                            resize="299×299, torch-fidelity TF1-compatible bilinear")


def _checked_output(path: Path, out, n: int):
    import torch

    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{path}: expected an N×d tensor for N={n}, got {shape}")
    return out.double().cpu().numpy()


def _to_input(batch: np.ndarray, device: str):
    """uint8 (N, H, W, 3) → float32 N×3×H×W in [0, 1] on ``device``: the extractor contract."""
    import torch

    return torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0).to(device)


def _torchscript(path: Path, device: str) -> FeatureExtractor:
    import torch

    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable TorchScript module ({exc})") from None

    def fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _checked_output(path, module(_to_input(batch, device)), len(batch))

    return FeatureExtractor(f"torchscript:{path.name}", f"torchscript:{file_sha256(path)}", fn)


def _static_batch(program) -> int | None:
    """The exported batch size of the program's first user input, None when dynamic."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            size = node.meta["val"].shape[0]
            return int(size) if isinstance(size, int) else None
    return None


def _exported(path: Path, device: str) -> FeatureExtractor:
    """A ``torch.export`` program (``.pt2``) under the same contract as TorchScript."""
    import torch

    try:
        program = torch.export.load(str(path))
        module = program.module().to(device)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable torch.export program ({exc})") from None
    fixed = _static_batch(program)

    def run(x):
        try:
            return module(x)
        except Exception as exc:
            raise ModelError(f"{path}: the exported program refused an input of shape "
                             f"{tuple(x.shape)} ({exc}); export it for float32 N×3×H×W at "
                             "the images' size, with a dynamic batch dimension") from None

    def fn(batch: np.ndarray) -> np.ndarray:
        x = _to_input(batch, device)
        with torch.no_grad():
            if fixed is None or fixed == len(x):
                return _checked_output(path, run(x), len(x))
            chunks = []
            for start in range(0, len(x), fixed):
                part = x[start:start + fixed]
                pad = fixed - len(part)  # repeat the last image; its features are dropped
                padded = torch.cat([part, part[-1:].expand(pad, *part.shape[1:])]) if pad else part
                chunks.append(_checked_output(path, run(padded), fixed)[:len(part)])
            return np.concatenate(chunks)

    return FeatureExtractor(f"export:{path.name}", f"export:{file_sha256(path)}", fn)


def mammonet_extractor(directory: Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """Features ``(N, D)`` of :meth:`MammoNet.embed` on gray images resized to its input size.

    ``directory`` defaults to the embedded MammoNet-tiny.
    """
    import torch

    from mame_eval.cad.data import to_input
    from mame_eval.cad.model import MammoNet
    from mame_eval.models.loading import EMBEDDED_MAMMONET  # the shipped MammoNet-tiny

    directory = Path(directory) if directory is not None else EMBEDDED_MAMMONET
    if not directory.is_dir():
        raise ModelError(f"MammoNet folder {directory} not found; pass --features with a "
                         "folder written by 'mame-eval train cad'")
    model = MammoNet.from_pretrained(directory, device=device)
    weights = next(directory.glob("*.safetensors"), None)
    identity = f"mammonet:{file_sha256(weights) if weights else directory}"

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.cat([to_input(img[..., 0], model.image_size) for img in batch]).to(device)
        with torch.no_grad():
            return model.embed(x).double().cpu().numpy()

    return FeatureExtractor("mammonet", identity, fn,
                            resize=f"{model.image_size}×{model.image_size}, bilinear antialiased")


def load_extractor(spec: str, inception_weights: Path | None = None,
                   device: str = "cpu") -> FeatureExtractor:
    """``inception``, ``mammonet`` (the shipped classifier), a MammoNet folder, a TorchScript
    ``.pt`` or a ``torch.export`` ``.pt2``."""
    if spec == "inception":
        return _inception(inception_weights, device)
    path = Path(spec)
    if path.suffix == ".pt2" and path.is_file():
        return _exported(path, device)
    if path.suffix in (".pt", ".pth", ".ts") and path.is_file():
        return _torchscript(path, device)
    if spec == "mammonet" or path.is_dir():
        return mammonet_extractor(None if spec == "mammonet" else path, device=device)
    raise InputError(
        f"--features {spec!r}: expected 'inception', 'mammonet', a MammoNet folder, a "
        "TorchScript file (.pt) or a torch.export program (.pt2)")


def extract_features(files: Sequence[Path], extractor: FeatureExtractor, batch_size: int = 16,
                     cache_dir: Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Features (N, d) of ``files``, from the cache when the same bytes were seen before."""
    files = [Path(f) for f in files]
    key = None
    if cache_dir is not None:
        digest = hashlib.sha256(extractor.identity.encode())
        for f in files:
            digest.update(file_sha256(f).encode())
        key = Path(cache_dir) / f"{digest.hexdigest()}.npy"
        if key.is_file():
            return np.load(key)
    chunks = []
    for start in range(0, len(files), batch_size):
        batch = [load_rgb(f) for f in files[start:start + batch_size]]
        shapes = {b.shape for b in batch}
        if len(shapes) > 1:
            raise InputError(f"images of one batch differ in size: {sorted(shapes)}")
        chunks.append(extractor(np.stack(batch)))
        if progress:
            progress(min(start + batch_size, len(files)), len(files))
    features = np.concatenate(chunks)
    if key is not None:
        with atomic_path(key) as tmp, open(tmp, "wb") as fh:
            np.save(fh, features)
    return features
