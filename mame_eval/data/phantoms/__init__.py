"""Procedural phantom mammograms, written as a real-format VinDr-Mammo dataset.

Everything runs offline on CPU and is deterministic: the same seed gives the same bytes.

* :func:`render_phantom` — one phantom in memory (:class:`PhantomSpec` → :class:`Phantom`);
* :func:`write_phantom_dataset` — ``n`` phantoms as ``images/<study>/<image>.dicom`` plus the
  VinDr CSVs, the ground truth (``phantom_truth.csv``, ``truth/*_breast.png``) and a preview.

Modules: ``anatomy`` (outline, pectoral muscle, thickness), ``texture`` (fibroglandular
power-law texture, fat, vessels), ``lesions`` (masses and their boxes), ``vendors`` (Hologic /
Siemens looks), ``render`` (one image), ``writer`` (the dataset).
"""

from mame_eval.data.phantoms.lesions import MASS_SHAPES, Mass, MassSpec
from mame_eval.data.phantoms.render import (
    DENSITIES,
    LATERALITIES,
    PHOTOMETRICS,
    VIEWS,
    Phantom,
    PhantomSpec,
    render_phantom,
    to_display,
)
from mame_eval.data.phantoms.texture import DENSE_FRACTION
from mame_eval.data.phantoms.vendors import VENDOR_KEYS, VENDORS, VendorProfile
from mame_eval.data.phantoms.writer import (
    BREAST_COLUMNS,
    FINDING_COLUMNS,
    POPULATIONS,
    TRUTH_COLUMNS,
    PhantomDatasetSummary,
    write_phantom_dataset,
)

__all__ = [
    "BREAST_COLUMNS", "DENSE_FRACTION", "DENSITIES", "FINDING_COLUMNS", "LATERALITIES",
    "MASS_SHAPES", "PHOTOMETRICS", "POPULATIONS", "TRUTH_COLUMNS", "VENDORS", "VENDOR_KEYS",
    "VIEWS", "Mass", "MassSpec", "Phantom", "PhantomDatasetSummary", "PhantomSpec",
    "VendorProfile", "render_phantom", "to_display", "write_phantom_dataset",
]
