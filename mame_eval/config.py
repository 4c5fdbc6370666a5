"""One way to read every declarative file (training, VAE, CAD, sweep, augment, report TOMLs).

A config is a TOML file validated by a pydantic model before any work starts; an unknown key is
an error with a did-you-mean, never ignored. ``--set key=value`` overrides any key at any depth
(``max_train_steps=3``, ``fid.real=runs/x``, ``model.blocks=[1, 1]``); the value is read as a
TOML value (``3``, ``1e-4``, ``true``, ``["a", "b"]``) and otherwise as plain text. Errors are
one line naming the file, the key and the value.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from mame_eval.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["apply_overrides", "load_config", "parse_override", "read_toml",
           "validation_error_line"]

Model = TypeVar("Model", bound=BaseModel)


def parse_override(text: str) -> tuple[str, object]:
    """``"key=value"`` → (key, value); the value as TOML when it parses, else as text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. max_train_steps=3")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict, overrides: Sequence[str] = ()) -> dict:
    """A copy of ``data`` with ``key=value`` overrides applied (dotted keys reach into tables,
    creating them when missing)."""
    data = _copy_tables(data)
    for item in overrides or ():
        key, value = parse_override(item)
        *parents, last = key.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a table")
            node = child
        node[last] = value
    return data


def _copy_tables(data: dict) -> dict:
    return {k: _copy_tables(v) if isinstance(v, dict) else v for k, v in data.items()}


def read_toml(path: Path | str, overrides: Sequence[str] = (), what: str = "config") -> dict:
    """A TOML file as a dict with ``--set`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return apply_overrides(data, overrides)


def _fields_at(model: type[BaseModel], loc: tuple) -> dict:
    """The fields of the (nested) config model that holds the key at ``loc``."""
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of tables: same model
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        nested = [t for t in (annotation, *getattr(annotation, "__args__", ()))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return {}
        model = nested[0]
    return model.model_fields


def validation_error_line(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """One readable line for a pydantic error of ``model`` (a config class) read from ``source``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            fields = list(_fields_at(model, err["loc"]))
            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"valid keys: {', '.join(fields)}"
            parts.append(f"unknown key {where!r} ({hint})")
        elif err["type"] == "missing":
            parts.append(f"missing key {where!r}")
        elif not err["loc"]:  # a check across keys: its message names them
            parts.append(msg)
        elif isinstance(err.get("input"), (list, dict)):  # the message names the bad item
            parts.append(f"{where}: {msg}")
        else:
            parts.append(f"{where} = {err.get('input')!r}: {msg}")
    return f"{source}: " + "; ".join(parts)


def load_config(model: type[Model], path: Path | str | None = None,
                overrides: Sequence[str] = (), *, data: dict | None = None,
                what: str = "config") -> Model:
    """Read ``path`` (or take ``data``), apply ``--set`` overrides and validate with ``model``.

    Raises:
        ConfigError: a missing or unreadable file, invalid TOML, an unknown key or a bad value
            — one line naming the file and the key.
    """
    if data is None:
        if path is None:
            raise ConfigError(f"give a {what} file or a dict")
        data = read_toml(path, overrides, what=what)
    else:
        data = apply_overrides(data, overrides)
    source = str(path) if path is not None else what
    if overrides:
        source += f" (with --set {', '.join(overrides)})"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_error_line(source, exc, model)) from None
