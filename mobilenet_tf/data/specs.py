"""`--dataset` values checked where they point, without TensorFlow: the directory given, its shards or
class folders, a TFDS name. `sources.check_spec` adds what needs the records or TFDS itself."""

from __future__ import annotations

import os

from mobilenet_tf import paths
from mobilenet_tf.config import DataConfig
from mobilenet_tf.data import plan


def check_spec(spec: str, data: DataConfig | None = None) -> str | None:
    """None when `spec` names a data set that may be read (with `data`'s --label_offset and
    --validation_fraction), else a sentence saying what is wrong."""
    data = data or DataConfig(dataset=spec)
    kind, _, arg = spec.partition(":")
    if data.label_offset is not None and (kind != "tfrecord" or data.label_offset < 0):
        return f"--label_offset={data.label_offset}: applies to tfrecord:DIR records only, and must not be negative"
    if kind == "digits":
        return None
    if kind == "tfrecord":
        if not arg:
            return "--dataset=tfrecord:DIR needs the directory of shards"
        if not os.path.isfile(os.path.join(arg, paths.INFO_FILE)) and not paths.shard_files(arg, "train"):
            return f"{arg} has no {paths.INFO_FILE} and no train-NNNNN-of-NNNNN shards: convert the images " \
                   f"with mobilenet-convert first"
        return None
    if kind == "folder":
        if not arg:
            return "--dataset=folder:DIR needs the directory of class folders"
        if not 0 <= data.validation_fraction < 1:
            return f"--validation_fraction={data.validation_fraction}: must be in [0, 1)"
        try:
            planned = plan.plan_folder(arg, validation_fraction=data.validation_fraction, seed=data.split_seed)
        except plan.ConvertError as error:
            return str(error).removeprefix(f"--input_dir={arg}: ")
        if not planned.splits.get("validation"):
            return "no held-out images: add DIR/train/<class>/ and DIR/val/<class>/, or a --validation_fraction > 0"
        return None
    if kind == "tfds":
        if not arg.partition(":")[0]:
            return "--dataset=tfds:NAME needs a TFDS data set name (imagenet2012, mnist, ...)"
        return None
    return f"unknown data set {spec!r}: use one of digits, tfrecord:DIR, folder:DIR, tfds:NAME[:VERSION]"
