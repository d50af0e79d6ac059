"""The record format: one tf.train.Example per image, as the TF/TPU ImageNet converters write it.

Keys: image/encoded (JPEG or PNG bytes), image/format, image/height, image/width, image/channels,
image/class/label (int64), image/class/synset, image/class/text, image/filename. A directory of
shards `<split>-NNNNN-of-MMMMM` sits beside `dataset_info.json`, which records the label offset
(classic ImageNet records use labels 1..1000), class names and per-split counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from mobilenet_tf.errors import UserError
from mobilenet_tf.paths import INFO_FILE, shard_files
from mobilenet_tf.rundir import write_atomic

# (image key, label key) of our records; TFDS records use ("image", "label").
KEYS = ("image/encoded", "image/class/label")


class SourceError(UserError, ValueError):
    """A data set that cannot be read as given; the message says why and which flag fixes it."""


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    encoded: bytes,
    *,
    label: int,
    height: int,
    width: int,
    channels: int,
    image_format: str,
    filename: str = "",
    synset: str = "",
    text: str = "",
) -> bytes:
    """A serialized tf.train.Example in the record format above."""
    feature = {
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(image_format.encode()),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(channels),
        "image/class/label": _int64(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/class/text": _bytes(text.encode()),
        "image/filename": _bytes(filename.encode()),
    }
    # deterministic: map fields in key order, so the same inputs give the same bytes in any process.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def parse(serialized: tf.Tensor, label_offset: int = 0, keys: tuple[str, str] = KEYS) -> tuple[tf.Tensor, tf.Tensor]:
    """(encoded image bytes, 0-based int32 label) from one serialized Example."""
    image_key, label_key = keys
    features = tf.io.parse_single_example(
        serialized, {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
    )
    label = tf.cast(features[label_key] - label_offset, tf.int32)
    return features[image_key], label


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `dataset_info.json` records about a directory of shards."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    counts: dict  # split -> number of examples
    label_offset: int = 0
    synsets: tuple[str, ...] = ()
    skipped: tuple = ()  # ({"file": ..., "reason": ...}, ...)
    keys: tuple[str, str] = KEYS  # (image, label) feature keys in each Example
    split_files: dict = dataclasses.field(default_factory=dict)  # split -> files, when not named as ours (TFDS)
    data_dir: str = ""

    def files(self, split: str) -> list[str]:
        if split in self.split_files:
            return list(self.split_files[split])
        return shard_files(self.data_dir, split)

    def parse(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(encoded image bytes, 0-based int32 label) of one of this data set's records."""
        return parse(serialized, self.label_offset, self.keys)

    def records(self, split: str) -> tf.data.Dataset:
        """(encoded image bytes, label) of every record of `split`, in file order."""
        return tf.data.TFRecordDataset(self.files(split)).map(self.parse)


def write_info(data_dir: str, info: DatasetInfo) -> None:
    """Write dataset_info.json atomically (temp name, then rename)."""
    record = dataclasses.asdict(info)
    record.pop("data_dir")
    write_atomic(os.path.join(data_dir, INFO_FILE), json.dumps(record, indent=1))


def read_info(data_dir: str) -> DatasetInfo:
    with open(os.path.join(data_dir, INFO_FILE)) as f:
        record = json.load(f)
    return DatasetInfo(
        name=record["name"],
        num_classes=int(record["num_classes"]),
        class_names=tuple(record["class_names"]),
        counts={k: int(v) for k, v in record["counts"].items()},
        label_offset=int(record.get("label_offset", 0)),
        synsets=tuple(record.get("synsets", ())),
        skipped=tuple(record.get("skipped", ())),
        keys=tuple(record.get("keys", KEYS)),
        split_files={k: tuple(v) for k, v in record.get("split_files", {}).items()},
        data_dir=data_dir,
    )


def scan_labels(files: list[str]) -> tuple[int, dict[int, tuple[str, str]]]:
    """(number of records, label -> (synset, text)) of record files, reading only those features."""
    spec = {
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(4096)
    ds = ds.map(lambda batch: tf.io.parse_example(batch, spec), num_parallel_calls=tf.data.AUTOTUNE)
    count, names = 0, {}
    for batch in ds.as_numpy_iterator():
        labels = batch["image/class/label"]
        count += len(labels)
        values, first = np.unique(labels, return_index=True)
        for label, i in zip(values.tolist(), first.tolist()):
            if label not in names:
                names[label] = (batch["image/class/synset"][i].decode(), batch["image/class/text"][i].decode())
    return count, names


def write_shard(path: str, records) -> None:
    """Write serialized records to `path` through a temporary name, so a shard is whole or absent."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
