"""Reader-study protocol: the rating scale, instructions and rules, validated from TOML.

A protocol file (e.g. ``studies/turing-0-4.toml``) looks like::

    name = "turing-0-4"
    title = "Real or synthetic?"
    question = "Is this mammogram real or synthetic?"
    instructions = "You will see {n_cases} mammograms ..."
    allow_back = false          # may a reader return to the previous case and change it?
    time_limit_s = 60           # optional: seconds per case (omit for no limit)
    min_view_ms = 500           # a case must be on screen this long before a rating counts
    score_used = "final"        # analyse the "final" score or the "first" one (allow_back)
    cutoff = 2.5                # scores above it are called "real" (accuracy, sens., spec.)

    [[scale]]
    value = 0
    label = "Definitely synthetic"
    ...

Higher scale values always mean "more likely real" (truth 1), so an AUROC of 0.5 means the
readers cannot tell real from synthetic. An unknown key anywhere is an error, not ignored.
:func:`dumps_toml` writes the protocol back (into ``study.toml``) without extra packages.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mame_eval.config import read_toml, validation_error_line
from mame_eval.errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "Protocol",
    "TURING_0_4_TOML",
    "ScalePoint",
    "default_protocol",
    "dumps_toml",
    "load_protocol",
    "load_toml",
    "protocol_from_dict",
]


class ScalePoint(BaseModel):
    """One point of the rating scale: the stored ``value`` and the ``label`` a reader sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: int = Field(ge=-1000, le=1000)
    label: str = Field(min_length=1, max_length=200)


class Protocol(BaseModel):
    """A validated reader-study protocol (see the module docstring for the TOML layout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    title: str = Field(default="Reader study", min_length=1, max_length=200)
    question: str = Field(default="How do you rate this image?", min_length=1, max_length=500)
    instructions: str = Field(min_length=1, max_length=20000)
    scale: tuple[ScalePoint, ...] = Field(min_length=2, max_length=20)
    allow_back: bool = False
    time_limit_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    min_view_ms: int = Field(default=500, ge=0, le=60_000)
    score_used: Literal["first", "final"] = "final"
    cutoff: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Protocol:
        values = [p.value for p in self.scale]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(
                f"scale values must be strictly increasing (higher = more likely real); "
                f"got {values}"
            )
        labels = [p.label.strip() for p in self.scale]
        if len(set(labels)) != len(labels):
            raise ValueError(f"scale labels must be distinct; got {labels}")
        if self.cutoff is not None and (
                not math.isfinite(self.cutoff) or not values[0] <= self.cutoff < values[-1]):
            raise ValueError(
                f"cutoff must lie in [{values[0]}, {values[-1]}) so that both calls occur; "
                f"got {self.cutoff}"
            )
        return self

    # ---------------------------------------------------------------------------------------

    @property
    def values(self) -> tuple[int, ...]:
        """Scale values, increasing."""
        return tuple(p.value for p in self.scale)

    @property
    def effective_cutoff(self) -> float:
        """``cutoff`` or, when unset, the middle of the scale (scores above it = "real")."""
        if self.cutoff is not None:
            return float(self.cutoff)
        return (self.values[0] + self.values[-1]) / 2

    def label(self, value: int) -> str:
        """The label of scale value ``value``."""
        for p in self.scale:
            if p.value == value:
                return p.label
        raise ConfigError(f"score {value!r} is not on the scale {list(self.values)}")

    def key_for(self, value: int) -> str | None:
        """Keyboard key that selects ``value`` (the digit itself for values 0-9), else None."""
        return str(value) if 0 <= value <= 9 else None

    def render_instructions(self, n_cases: int) -> str:
        """Instructions with ``{n_cases}`` replaced by the number of cases."""
        return self.instructions.replace("{n_cases}", str(n_cases))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in TOML layout (``None`` fields left out)."""
        out: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "question": self.question,
            "instructions": self.instructions,
            "allow_back": self.allow_back,
        }
        if self.time_limit_s is not None:
            out["time_limit_s"] = self.time_limit_s
        out["min_view_ms"] = self.min_view_ms
        out["score_used"] = self.score_used
        if self.cutoff is not None:
            out["cutoff"] = self.cutoff
        out["scale"] = [{"value": p.value, "label": p.label} for p in self.scale]
        return out


def protocol_from_dict(data: dict, source: str = "protocol") -> Protocol:
    """Validate a protocol given as a dict (e.g. the ``[protocol]`` table of ``study.toml``).

    Raises
    ------
    ConfigError
        One line naming ``source``, the field and what was expected.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of protocol settings")
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_error_line(source, exc, Protocol)) from None


def load_toml(path: Path | str) -> dict:
    """Read a TOML file; a missing file or a syntax error becomes one-line ConfigError."""
    return read_toml(path, what="study file")


def load_protocol(path: Path | str) -> Protocol:
    """Load and validate a protocol TOML file (unknown keys are errors)."""
    return protocol_from_dict(load_toml(path), source=str(path))


#: The paper's protocol, identical to ``studies/turing-0-4.toml`` (a test keeps them equal); the
#: default of ``study create`` when no ``--protocol`` is given.
TURING_0_4_TOML = r'''name = "turing-0-4"
title = "Real or synthetic mammogram?"
question = "Is this mammogram real or synthetic?"
instructions = """
You will see **{n_cases} mammograms**, one at a time. Some are real screening mammograms and
some were generated by a computer model. The cases are in a random order and their names,
sizes and file formats are all the same, so only the image itself can tell you.

For each image, decide how confident you are that it is **real**:

* **0** definitely synthetic, **1** probably synthetic, **2** unsure, **3** probably real,
  **4** definitely real.

Click a rating or press the key **0-4**: one press is one rating, counted once the image has
been on screen for half a second. Zoom with the mouse wheel or + / -, drag to pan, double-click
or F to fit, "1:1" for full resolution. Adjust brightness and contrast (window / level) by
dragging with the right mouse button, with the sliders or a preset; I inverts the grey scale,
M shows a magnifier under the mouse, R resets. "Instructions" (next to "Case k of n") or the
key H shows this again.

Your rating is saved as soon as you give it, and the next image follows. Ratings are final.
You can close the page at any time: your link brings you back to the first image you have not
rated yet. Please do not discuss the images with other readers until everyone has finished.
"""
allow_back = false
min_view_ms = 500  # a rating counts only once the case has been on screen this long
score_used = "final"  # what `analyze` uses when going back is allowed: "first" or "final"
cutoff = 2.5  # scores above the cutoff (3, 4) are "called real" for accuracy, sens., spec.

[[scale]]
value = 0
label = "Definitely synthetic"

[[scale]]
value = 1
label = "Probably synthetic"

[[scale]]
value = 2
label = "Unsure"

[[scale]]
value = 3
label = "Probably real"

[[scale]]
value = 4
label = "Definitely real"
'''


def default_protocol() -> Protocol:
    """The paper's 0-4 real-vs-synthetic protocol (``studies/turing-0-4.toml``)."""
    return protocol_from_dict(tomllib.loads(TURING_0_4_TOML), source="turing-0-4 (built in)")


# --------------------------------------------------------------------------------------------
# a small TOML writer (the standard library only reads TOML)
# --------------------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write the non-finite number {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, dict) for v in value)


def _dump_table(data: dict, prefix: str, lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items()
               if v is not None and not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in data.items():
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        if isinstance(v, dict):
            lines += ["", f"[{name}]"]
            _dump_table(v, name, lines)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{name}]]"]
                _dump_table(item, name, lines)


def dumps_toml(data: dict) -> str:
    """Serialise nested dicts of str/int/float/bool/lists (and arrays of tables) as TOML."""
    lines: list[str] = []
    _dump_table(data, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"
