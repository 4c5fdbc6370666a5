"""MAM-E models: loading (hub id, local folder, offline), tiny SD-family models, the offline
CLIP tokenizer. Imports of torch/diffusers happen inside the functions, so importing this
package is cheap."""

from mame_eval.models.loading import (
    EMBEDDED_MODELS,
    PUBLISHED_MODELS,
    SCHEDULERS,
    CatalogEntry,
    ModelSource,
    catalog,
    default_model,
    load_pipeline,
    make_scheduler,
    model_revision,
    resolve_dtype,
    resolve_model,
)
from mame_eval.models.tiny import (
    TinySpec,
    create_tiny_pipeline,
    save_tiny_pipeline,
    tiny_components,
)
from mame_eval.models.tokenizer import build_tokenizer, prompt_words

__all__ = [
    "CatalogEntry",
    "catalog",
    "EMBEDDED_MODELS",
    "PUBLISHED_MODELS",
    "SCHEDULERS",
    "ModelSource",
    "TinySpec",
    "build_tokenizer",
    "create_tiny_pipeline",
    "default_model",
    "load_pipeline",
    "make_scheduler",
    "model_revision",
    "prompt_words",
    "resolve_dtype",
    "resolve_model",
    "save_tiny_pipeline",
    "tiny_components",
]
