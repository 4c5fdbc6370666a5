"""DICOM encoding of one phantom: a valid MG "for presentation" file, deterministic bytes.

Explicit VR Little Endian, uncompressed, with file meta; UIDs come from
``pydicom.uid.generate_uid(entropy_srcs=...)`` on the seed and the image's ids, so the same
seed gives the same UIDs. No date, time or other clock value is written; patient data are
synthetic (``PatientID`` = ``PHANTOM-`` + the study hash).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from mame_eval.data.phantoms.render import Phantom
from mame_eval.data.phantoms.vendors import vendor_profile

if TYPE_CHECKING:
    from mame_eval.data.phantoms.writer import ImagePlan

# Digital Mammography X-Ray Image Storage - For Presentation
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"


def patient_orientation(laterality: str, view: str) -> list[str]:
    """DICOM PatientOrientation (row, column direction) of a mammogram in our layout."""
    row = "A" if laterality == "L" else "P"
    col = ("R" if laterality == "L" else "L") if view == "CC" else "F"
    return [row, col]


def dicom_bytes(plan: ImagePlan, ph: Phantom, seed: int) -> bytes:
    """The complete DICOM file (preamble, file meta, dataset) of one rendered phantom."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    vendor = vendor_profile(plan.vendor)
    height, width = ph.pixels.shape
    base = f"mame-eval-phantom|{seed}"
    study_uid = generate_uid(entropy_srcs=[base, "study", plan.study_id])
    series_uid = generate_uid(entropy_srcs=[base, "series", plan.series_id])
    sop_uid = generate_uid(entropy_srcs=[base, "sop", plan.image_id])
    frame_uid = generate_uid(entropy_srcs=[base, "frame", plan.study_id])
    spacing = vendor.detector_height_mm / height
    age = 40 + int(plan.study_id[:4], 16) % 36

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = vendor.manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PHANTOM MAMMOGRAPHY"
    ds.SeriesDescription = f"{plan.laterality} {plan.view}"
    ds.ManufacturerModelName = vendor.model
    ds.PatientName = "ANONYMOUS"
    ds.PatientID = f"PHANTOM-{plan.study_id[:12].upper()}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.KVP = f"{vendor.kvp:.0f}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = plan.study_id[:16]
    ds.SeriesNumber = plan.index % 4 + 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = patient_orientation(plan.laterality, plan.view)
    ds.FrameOfReferenceUID = frame_uid
    ds.Laterality = plan.laterality
    ds.ImageLaterality = plan.laterality
    ds.ViewPosition = plan.view
    ds.BreastImplantPresent = "NO"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = ph.photometric
    ds.Rows = height
    ds.Columns = width
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = ph.bits_stored
    ds.HighBit = ph.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{ph.window_center:.1f}"
    ds.WindowWidth = f"{ph.window_width:.1f}"
    ds.WindowCenterWidthExplanation = "BREAST"
    # DX/MG rule: IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1.
    ds.PresentationLUTShape = "INVERSE" if ph.photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelData = ph.pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"

    buf = io.BytesIO()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(buf, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(buf, write_like_original=False)
    return buf.getvalue()
