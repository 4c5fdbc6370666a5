"""Datasets: raw readers (DICOM, VinDr-Mammo layout), phantoms, and the paper's preparation."""
