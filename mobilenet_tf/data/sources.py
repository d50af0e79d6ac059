"""Data set names -> the DatasetInfo (record files, feature keys, classes, counts) `build_dataset` reads.

- `digits`: the embedded default.
- `tfrecord:DIR`: mobilenet-convert's output (DIR/dataset_info.json), or the classic records of the
  TF/TPU ImageNet converters (the same shard names and keys, labels 1..1000, no dataset_info.json).
  Those are scanned once (counts, labels and synsets; cached under the cache dir) and need
  --label_offset, which is checked against the labels found: the smallest must become 0.
- `folder:DIR`: class folders, converted once by `convert` into <cache dir>/folders/ (the same
  records and skip list as mobilenet-convert) and read from there; a later run redoes only the
  shards whose files changed.
- `tfds:NAME[:VERSION]`: a TFDS image classification set (see tfds_source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

from absl import logging

from mobilenet_tf import paths
from mobilenet_tf.config import DataConfig, default_cache_dir
from mobilenet_tf.data import convert, digits, plan, specs, tfds_source, tfrecord
from mobilenet_tf.data.tfrecord import SourceError
from mobilenet_tf.rundir import write_atomic

KINDS = ("digits", "tfrecord", "folder", "tfds")
# Folders with fewer files are converted in this process: starting worker processes costs more.
SMALL_FOLDER = 2000


def check_spec(spec: str, data: DataConfig | None = None) -> str | None:
    """None when `spec` names a data set we can read (with `data`'s --label_offset, --tfds_data_dir,
    --validation_fraction), else a sentence saying what is wrong: `specs.check_spec`, then what
    only the records (their labels) or TFDS (its catalog) can tell."""
    data = data or DataConfig(dataset=spec)
    problem = specs.check_spec(spec, data)
    if problem:
        return problem
    kind, _, arg = spec.partition(":")
    if kind == "tfrecord" and not os.path.isfile(os.path.join(arg, paths.INFO_FILE)):
        try:
            _classic_info(arg, data)
        except SourceError as error:
            return str(error)
    if kind == "tfds":
        return tfds_source.check(arg, data.tfds_data_dir)
    return None


def resolve(data: DataConfig) -> tfrecord.DatasetInfo:
    """The DatasetInfo (with its data_dir) of the data set `data.dataset` names.

    Raises:
      SourceError: it cannot be read (`check_spec`'s sentence, after `--dataset=...: `).
    """
    problem = check_spec(data.dataset, data)
    if problem:
        raise SourceError(f"--dataset={data.dataset}: {problem}")
    kind, _, arg = data.dataset.partition(":")
    cache_dir = data.cache_dir or default_cache_dir()
    if kind == "digits":
        return tfrecord.read_info(digits.materialize(cache_dir))
    if kind == "folder":
        return _folder_info(arg, data, cache_dir)
    if kind == "tfds":
        return tfds_source.resolve(arg, data.tfds_data_dir)
    if not os.path.isfile(os.path.join(arg, paths.INFO_FILE)):
        return _classic_info(arg, data)
    info = tfrecord.read_info(arg)
    if data.label_offset is not None:
        info = dataclasses.replace(info, label_offset=data.label_offset)
    return info


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value).encode()).hexdigest()[:16]


def _classic_info(data_dir: str, data: DataConfig) -> tfrecord.DatasetInfo:
    """The DatasetInfo of records without dataset_info.json, from a scan of their labels (cached)."""
    files = {split: paths.shard_files(data_dir, split) for split in paths.SPLITS}
    stats = [(os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in sum(files.values(), [])]
    cache = os.path.join(data.cache_dir or default_cache_dir(), "tfrecord-scans",
                         f"{_digest([os.path.abspath(data_dir), stats])}.json")
    try:
        with open(cache) as f:
            scan = json.load(f)
    except (OSError, ValueError):
        logging.info("Scanning the labels of the records in %s (once)", data_dir)
        scan = {"counts": {}, "labels": {}}
        for split, split_files in files.items():
            if split_files:
                count, labels = tfrecord.scan_labels(split_files)
                scan["counts"][split] = count
                for label, names in labels.items():
                    scan["labels"].setdefault(str(label), names)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        write_atomic(cache, json.dumps(scan))
    labels = sorted(int(label) for label in scan["labels"])
    offset, low, high = data.label_offset, labels[0], labels[-1]
    if offset is None:
        raise SourceError(f"{data_dir} has no {paths.INFO_FILE} (its labels run {low}..{high}): give "
                          f"--label_offset, 1 for the TF/TPU ImageNet converters' records (labels 1..1000, 0 unused), "
                          f"0 for labels from 0")
    if low < offset:
        raise SourceError(f"--label_offset={offset}: {data_dir} has records labelled {low}, which would become "
                          f"{low - offset}; use --label_offset={low}")
    if low > offset:
        raise SourceError(f"--label_offset={offset}: no record in {data_dir} is labelled {offset} (its labels run "
                          f"{low}..{high}), so class 0 would never be seen; use --label_offset={low}")
    synsets = tuple(scan["labels"].get(str(label), ["", ""])[0] for label in range(offset, high + 1))
    names = tuple(scan["labels"].get(str(label), ["", ""])[1] or synset or str(label - offset)
                  for label, synset in zip(range(offset, high + 1), synsets))
    return tfrecord.DatasetInfo(
        name=os.path.basename(os.path.abspath(data_dir)), num_classes=high - offset + 1, class_names=names,
        counts=scan["counts"], label_offset=offset, synsets=synsets if any(synsets) else (), data_dir=data_dir,
    )


def _folder_info(root: str, data: DataConfig, cache_dir: str) -> tfrecord.DatasetInfo:
    """Convert the class folders under `root` into the cache (only the shards that changed)."""
    planned = plan.plan_folder(root, validation_fraction=data.validation_fraction, seed=data.split_seed)
    warning = plan.empty_class_warning(planned, root)
    if warning:
        logging.warning("%s", warning)
    output_dir = os.path.join(cache_dir, "folders", f"{planned.name}-"
                              f"{_digest([os.path.abspath(root), data.validation_fraction, data.split_seed])}")
    total = sum(len(items) for items in planned.splits.values())
    logging.info("Reading %s (%d files) through its records in %s", root, total, output_dir)
    last = [time.monotonic()]

    def progress(done, total):
        if time.monotonic() - last[0] > 10:
            last[0] = time.monotonic()
            logging.info("Converted %d/%d images of %s", done, total, root)

    info = convert.write(planned, output_dir, num_workers=0 if total < SMALL_FOLDER else convert.default_num_workers(),
                         progress=progress)
    if info.skipped:
        logging.warning("%d files of %s are not usable images and were skipped (listed in %s)", len(info.skipped),
                        root, os.path.join(output_dir, paths.INFO_FILE))
    return info
