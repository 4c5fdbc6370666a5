import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mame_eval.data.dicom import RawImage, read_dicom, read_image, to_uint8
from mame_eval.errors import DataError


def write_dicom(path, pixels, photometric="MONOCHROME2", bits=12, window=None,
                manufacturer="SIEMENS"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "MG"
    ds.Manufacturer = manufacturer
    ds.ViewPosition = "MLO"
    ds.ImageLaterality = "R"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_is_inverted_and_tags_read(tmp_path):
    stored = np.array([[4095, 4095], [0, 1000]], np.uint16)
    raw = read_dicom(write_dicom(tmp_path / "a.dicom", stored, "MONOCHROME1",
                                 window=(3000, 2000)))
    assert raw.photometric == "MONOCHROME1"
    assert raw.pixels.tolist() == [[0, 0], [4095, 3095]]
    assert raw.window == (4095 - 3000, 2000)
    assert (raw.manufacturer, raw.view, raw.laterality, raw.bits_stored) == (
        "SIEMENS", "MLO", "R", 12)


def test_paper_conversion_is_min_max():
    raw = RawImage(pixels=np.array([[100.0, 150.0], [200.0, 300.0]]), bits_stored=12)
    assert to_uint8(raw, "paper").tolist() == [[0, 64], [128, 255]]


def test_window_conversion_follows_the_dicom_formula():
    # PS3.3 C.11.2.1.2: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> max; linear between
    raw = RawImage(pixels=np.array([[0.0, 1000.0, 1500.0, 4000.0]]), bits_stored=12,
                   window=(1500.5, 1001.0))
    out = to_uint8(raw, "window").ravel().tolist()
    assert out[0] == 0 and out[3] == 255
    assert out[1] == 0 and out[2] == 128
    # without a window, 'window' falls back to min-max
    assert to_uint8(RawImage(raw.pixels, 12), "window").ravel().tolist()[-1] == 255


def test_constant_image_gives_black():
    assert to_uint8(RawImage(np.full((2, 2), 7.0), 12)).max() == 0


def test_bad_mode():
    with pytest.raises(DataError, match="8-bit conversion"):
        to_uint8(RawImage(np.zeros((2, 2)), 12), "gamma")


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.dicom"
    bad.write_bytes(b"this is not a dicom file")
    with pytest.raises(DataError, match="broken.dicom: not a readable DICOM"):
        read_dicom(bad)
    with pytest.raises(DataError, match="gone.dicom: file not found"):
        read_dicom(tmp_path / "gone.dicom")


def test_16_bit_png(tmp_path):
    arr = np.array([[0, 30000], [65535, 1]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "x.png")
    raw = read_image(tmp_path / "x.png")
    assert raw.bits_stored == 16 and raw.pixels.max() == 65535
    assert to_uint8(raw).tolist() == [[0, 117], [255, 0]]


def test_pydicom_reads_back_what_we_wrote(tmp_path):
    path = write_dicom(tmp_path / "b.dicom", np.arange(6).reshape(2, 3))
    assert pydicom.dcmread(path).pixel_array.tolist() == [[0, 1, 2], [3, 4, 5]]
