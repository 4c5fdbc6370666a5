"""The prompt vocabulary of MAM-E: the single source of truth for attribute values and prompts.

The published models were trained on exactly these strings (DESIGN §1):

=============  ==============================================================================
family         prompt
=============  ==============================================================================
hologic        ``a mammogram in {CC,MLO} view with {small,medium,big} area``
siemens        ``a mammogram in {CC,MLO} view with {very low,low,high,very high} density``
fusion         ``a {hologic,siemens} mammogram in {view} view with {density} density and
               {area} area`` (or area first, or only one of the two)
inpainting     ``a mammogram with a lesion``
=============  ==============================================================================

:func:`render` builds those strings from a :class:`Prompt`; :func:`parse` reads them back,
strictly: a value outside the vocabulary raises :class:`~mame_eval.errors.PromptError` listing
the valid values. Parsing ignores case and repeated white space (so the published capitalisation
``A mammogram in MLO view …`` is accepted); rendering always gives the canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

from mame_eval.errors import PromptError

__all__ = [
    "AREA_THRESHOLDS",
    "INPAINT_PROMPT",
    "Area",
    "Density",
    "Family",
    "Laterality",
    "Prompt",
    "Vendor",
    "View",
    "area_from_ratio",
    "density_from_birads",
    "parse",
    "parse_value",
    "render",
]


class _Vocab(str, Enum):
    """A string enum whose members parse case-insensitively with a helpful error."""

    @classmethod
    def parse(cls, text: str):
        key = " ".join(str(text).split()).lower()
        for member in cls:
            if member.value.lower() == key or member.name.lower() == key.replace(" ", "_"):
                return member
        valid = ", ".join(repr(m.value) for m in cls)
        raise PromptError(f"unknown {cls.field_name()} {text!r}; expected one of {valid}")

    @classmethod
    def field_name(cls) -> str:
        return cls.__name__.lower()

    def __str__(self) -> str:
        return self.value


class Vendor(_Vocab):
    HOLOGIC = "hologic"
    SIEMENS = "siemens"


class View(_Vocab):
    CC = "CC"
    MLO = "MLO"


class Laterality(_Vocab):
    L = "L"
    R = "R"


class Density(_Vocab):
    """Breast density words of the Siemens prompts, one per BI-RADS letter A–D."""

    VERY_LOW = "very low"
    LOW = "low"
    HIGH = "high"
    VERY_HIGH = "very high"

    @property
    def birads(self) -> str:
        return "ABCD"[list(Density).index(self)]


class Area(_Vocab):
    """Breast area bins of the Hologic prompts (see :data:`AREA_THRESHOLDS`)."""

    SMALL = "small"
    MEDIUM = "medium"
    BIG = "big"


class Family(_Vocab):
    HOLOGIC = "hologic"
    SIEMENS = "siemens"
    FUSION = "fusion"
    INPAINTING = "inpainting"


#: ``small`` below the first, ``big`` above the second, ``medium`` in between (both inclusive).
AREA_THRESHOLDS = (0.4, 0.6)

INPAINT_PROMPT = "a mammogram with a lesion"


def area_from_ratio(area_ratio: float) -> Area:
    """Bin a breast area ratio (breast pixels ÷ image pixels, in [0, 1]) as the paper did."""
    if not 0.0 <= area_ratio <= 1.0:
        raise PromptError(f"area_ratio {area_ratio!r} is outside [0, 1]")
    low, high = AREA_THRESHOLDS
    if area_ratio < low:
        return Area.SMALL
    if area_ratio > high:
        return Area.BIG
    return Area.MEDIUM


def density_from_birads(value: str) -> Density:
    """``'A'``, ``'density b'``, ``'DENSITY C'`` (VinDr) or a density word → :class:`Density`."""
    text = " ".join(str(value).split()).upper()
    text = text.removeprefix("DENSITY").removeprefix("BI-RADS").strip()
    if len(text) == 1 and text in "ABCD":
        return list(Density)["ABCD".index(text)]
    try:
        return Density.parse(value)
    except PromptError:
        raise PromptError(
            f"unknown breast density {value!r}; expected a BI-RADS letter A, B, C, D "
            f"(e.g. 'DENSITY C') or one of {', '.join(repr(d.value) for d in Density)}"
        ) from None


_FIELDS = {"vendor": Vendor, "view": View, "laterality": Laterality, "density": Density,
           "area": Area, "family": Family}


def parse_value(field: str, value: str):
    """Parse one attribute value by field name (``'density'``, ``'area'``, ...)."""
    try:
        enum = _FIELDS[field]
    except KeyError:
        raise PromptError(
            f"unknown attribute {field!r}; expected one of {', '.join(_FIELDS)}"
        ) from None
    if field == "density":
        return density_from_birads(value)
    return enum.parse(value)


@dataclass(frozen=True)
class Prompt:
    """A structured prompt. Which fields are required depends on ``family``.

    ``density_first`` only matters for fusion prompts that name both attributes.
    """

    family: Family
    view: View | None = None
    vendor: Vendor | None = None
    density: Density | None = None
    area: Area | None = None
    density_first: bool = True

    def __post_init__(self) -> None:
        # Accept plain strings for convenience, store enums.
        for name, enum in (("family", Family), ("view", View), ("vendor", Vendor),
                           ("density", Density), ("area", Area)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, enum):
                object.__setattr__(self, name, parse_value(name, value))
        self._check()

    def _check(self) -> None:
        fam = self.family

        def need(*names: str) -> None:
            missing = [n for n in names if getattr(self, n) is None]
            if missing:
                raise PromptError(f"a {fam.value} prompt needs {', '.join(missing)}")

        def forbid(*names: str) -> None:
            extra = [n for n in names if getattr(self, n) is not None]
            if extra:
                raise PromptError(f"a {fam.value} prompt cannot name {', '.join(extra)}")

        if fam is Family.HOLOGIC:
            need("view", "area")
            forbid("vendor", "density")
        elif fam is Family.SIEMENS:
            need("view", "density")
            forbid("vendor", "area")
        elif fam is Family.FUSION:
            # Name everything that is missing at once, not one attribute per try.
            missing = [n for n in ("view", "vendor") if getattr(self, n) is None]
            if self.density is None and self.area is None:
                missing.append("density, area or both")
            if missing:
                raise PromptError(f"a fusion prompt needs {' and '.join(missing)} "
                                  "(e.g. vendor=siemens,view=CC,density=B)")
        else:
            forbid("view", "vendor", "density", "area")
        if self.density is None or self.area is None:
            # The order flag is meaningless with fewer than two attributes: normalise it so
            # that equal prompts compare equal.
            object.__setattr__(self, "density_first", True)

    def render(self) -> str:
        return render(self)

    def with_(self, **changes) -> Prompt:
        return replace(self, **changes)


def render(prompt: Prompt) -> str:
    """The canonical prompt string of ``prompt`` (exactly the published grammar)."""
    fam = prompt.family
    if fam is Family.INPAINTING:
        return INPAINT_PROMPT
    parts = []
    if prompt.density is not None:
        parts.append(f"{prompt.density.value} density")
    if prompt.area is not None:
        parts.append(f"{prompt.area.value} area")
    if not prompt.density_first:
        parts.reverse()
    subject = "a mammogram" if fam is not Family.FUSION else f"a {prompt.vendor.value} mammogram"
    return f"{subject} in {prompt.view.value} view with {' and '.join(parts)}"


_PROMPT_RE = re.compile(
    r"^a (?:(?P<vendor>\S+) )?mammogram in (?P<view>\S+) view with (?P<rest>.+)$"
)
_ATTR_RE = re.compile(r"^(?P<value>.+) (?P<kind>density|area)$")


def parse(text: str) -> Prompt:
    """Parse a prompt string into a :class:`Prompt`; the inverse of :func:`render`.

    The family follows from the form: a vendor word → fusion; otherwise area → hologic,
    density → siemens; ``a mammogram with a lesion`` → inpainting.
    """
    norm = " ".join(str(text).split()).lower()
    if norm == INPAINT_PROMPT:
        return Prompt(Family.INPAINTING)
    match = _PROMPT_RE.match(norm)
    if match is None:
        raise PromptError(
            f"prompt {text!r} does not follow the grammar 'a [vendor] mammogram in <view> view "
            f"with <attribute>' or {INPAINT_PROMPT!r}"
        )
    vendor = Vendor.parse(match["vendor"]) if match["vendor"] else None
    view = View.parse(match["view"])
    chunks = match["rest"].split(" and ")
    if len(chunks) > 2:
        raise PromptError(f"prompt {text!r} names more than two attributes")
    values: dict[str, str] = {}
    order = []
    for chunk in chunks:
        attr = _ATTR_RE.match(chunk)
        if attr is None:
            raise PromptError(
                f"prompt {text!r}: cannot read {chunk!r}; expected '<value> density' or "
                "'<value> area'"
            )
        if attr["kind"] in values:
            raise PromptError(f"prompt {text!r} names {attr['kind']} twice")
        values[attr["kind"]] = attr["value"]
        order.append(attr["kind"])
    density = Density.parse(values["density"]) if "density" in values else None
    area = Area.parse(values["area"]) if "area" in values else None
    if vendor is not None:
        family = Family.FUSION
    elif density is not None and area is not None:
        raise PromptError(
            f"prompt {text!r} names density and area but no vendor; only fusion prompts "
            "('a hologic mammogram …' / 'a siemens mammogram …') name both"
        )
    else:
        family = Family.HOLOGIC if area is not None else Family.SIEMENS
    return Prompt(family, view=view, vendor=vendor, density=density, area=area,
                  density_first=order[0] == "density")
