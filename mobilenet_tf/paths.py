"""What the project's files are called, and what a path holds, told without TensorFlow: the commands
check the paths they are given before they load it."""

from __future__ import annotations

import glob
import os
import re

from mobilenet_tf.config import CONFIG_FILE

# A data set: TFRecord shards per split, and what mobilenet-convert records about them.
INFO_FILE = "dataset_info.json"
SPLITS = ("train", "validation")


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def shard_files(data_dir: str, split: str) -> list[str]:
    """The complete shards of a split, sorted (temporary files of an interrupted write excluded)."""
    return sorted(glob.glob(os.path.join(data_dir, f"{split}-?????-of-?????")))


def checkpoint_exists(path: str) -> bool:
    """A model_dir with a `checkpoint` file, or a checkpoint prefix (its .index file exists)."""
    return os.path.isfile(os.path.join(path, "checkpoint")) or os.path.isfile(f"{path}.index")


def next_version(export_base: str) -> int:
    """One more than the largest integer-named version under `export_base` (1 when none)."""
    versions = [int(d) for d in os.listdir(export_base) if re.fullmatch(r"\d+", d)] if os.path.isdir(export_base) else []
    return max(versions, default=0) + 1


def kind_of(path: str) -> str | None:
    """"saved_model", "tflite", "onnx", "checkpoint" or "model_base" (integer versions); None if none
    of them."""
    if os.path.isfile(path):
        return {".tflite": "tflite", ".onnx": "onnx"}.get(os.path.splitext(path)[1])
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "saved_model"
    if os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, "checkpoint")):
        return "checkpoint"
    if os.path.isdir(path) and any(re.fullmatch(r"\d+", d) for d in os.listdir(path)):
        return "model_base"
    return None
