"""mame-eval: fine-tune, sample and assess MAM-E mammogram diffusion models."""

__version__ = "0.1.0"
