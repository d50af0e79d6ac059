"""The embedded default data set: scikit-learn's 8x8 handwritten digits (bundled, offline).

Each 8x8 image (values 0..16) is scaled by 255/16, rounded and stored as an 8-bit grayscale PNG.
Validation is the samples whose index % 5 == 0 (360); training is the rest (1437). The set is
materialized once under the cache directory as PNG class folders (`train/<c>/`, `val/<c>/`) and as
TFRecord shards in the converter's record format, then read through the same tf.data code as any
other data set.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import tensorflow as tf

from mobilenet_tf import paths
from mobilenet_tf.data import tfrecord

NAME = "digits"
NUM_CLASSES = 10
# Several shards so that per-worker file sharding works with a few workers.
SHARDS = {"train": 4, "validation": 2}
FOLDERS = {"train": "train", "validation": "val"}


def images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [1797, 8, 8] scaled to 0..255, and int labels, in load_digits' order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def split_indices(num_examples: int) -> dict[str, np.ndarray]:
    index = np.arange(num_examples)
    return {"train": index[index % 5 != 0], "validation": index[index % 5 == 0]}


def materialize(cache_dir: str) -> str:
    """The directory holding the digits shards, PNG folders and dataset_info.json; built if absent.

    It is built under a temporary name and renamed into place, so an interrupted build leaves
    nothing that looks complete.
    """
    root = os.path.join(cache_dir, NAME)
    if os.path.exists(os.path.join(root, paths.INFO_FILE)):
        return root
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{root}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    images, labels = images_and_labels()
    class_names = tuple(str(c) for c in range(NUM_CLASSES))
    counts = {}
    for split, indices in split_indices(len(labels)).items():
        records = []
        for i in indices:
            png = tf.io.encode_png(images[i][:, :, None]).numpy()
            filename = f"{i:04d}.png"
            folder = os.path.join(tmp, FOLDERS[split], class_names[labels[i]])
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, filename), "wb") as f:
                f.write(png)
            records.append(
                tfrecord.make_example(
                    png, label=int(labels[i]), height=8, width=8, channels=1, image_format="PNG",
                    filename=filename, text=class_names[labels[i]],
                )
            )
        num_shards = SHARDS[split]
        for shard in range(num_shards):
            path = os.path.join(tmp, paths.shard_name(split, shard, num_shards))
            tfrecord.write_shard(path, records[shard::num_shards])
        counts[split] = len(indices)
    info = tfrecord.DatasetInfo(name=NAME, num_classes=NUM_CLASSES, class_names=class_names, counts=counts)
    tfrecord.write_info(tmp, info)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return root
