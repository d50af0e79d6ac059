"""Data set names -> a directory of record shards with its DatasetInfo.

`digits` (the embedded default) and `tfrecord:DIR` (our converter's output, or the classic TF/TPU
ImageNet records when DIR has a dataset_info.json saying label_offset 1).
"""

from __future__ import annotations

import os

from mobilenet_tf.config import DataConfig, default_cache_dir
from mobilenet_tf.data import digits, tfrecord

KINDS = ("digits", "tfrecord")


def check_spec(spec: str) -> str | None:
    """None when `spec` names a data set we can read, else a sentence saying what is wrong."""
    kind, _, arg = spec.partition(":")
    if kind == "digits":
        return None
    if kind == "tfrecord":
        if not arg:
            return "--dataset=tfrecord:DIR needs the directory of shards"
        if not os.path.isfile(os.path.join(arg, tfrecord.INFO_FILE)):
            return f"{arg} has no {tfrecord.INFO_FILE}: convert the images with mobilenet-convert first"
        return None
    return f"unknown data set {spec!r}: use one of digits, tfrecord:DIR"


def resolve(data: DataConfig) -> tfrecord.DatasetInfo:
    """The DatasetInfo (with its data_dir) of the data set `data.dataset` names."""
    kind, _, arg = data.dataset.partition(":")
    if kind == "digits":
        return tfrecord.read_info(digits.materialize(data.cache_dir or default_cache_dir()))
    return tfrecord.read_info(arg)
