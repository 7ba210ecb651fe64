"""Data in: image I/O, the bundled photos, labelled folders, the resumable dataset runner, and
the biased coloured digits of the dataset-bias check."""

from convlens.data.biased import BiasedSet, make_biased, write_biased
from convlens.data.folders import LabelledItem, scan_labelled
from convlens.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    find_images,
    load_image,
    quantize_8bit,
    save_image,
    source_name,
)
from convlens.data.runner import RunReport, iter_shards, read_outputs, run_dataset
from convlens.data.samples import SAMPLES, load_sample, sample_names

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "SAMPLES",
    "BiasedSet",
    "LabelledItem",
    "RunReport",
    "find_images",
    "iter_shards",
    "load_image",
    "load_sample",
    "make_biased",
    "quantize_8bit",
    "read_outputs",
    "run_dataset",
    "sample_names",
    "save_image",
    "scan_labelled",
    "source_name",
    "write_biased",
]
