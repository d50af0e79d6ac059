"""Images on disk -> sharded TFRecords in the record format of `tfrecord`, beside dataset_info.json.

Two layouts are planned into one `Plan` (labelled files per split, in the order they are written)
and written by one `write`:

- ImageNet (ILSVRC2012): ROOT/train/<wnid>/*.JPEG; validation as ROOT/val/<wnid>/*.JPEG, or flat
  ROOT/val/*.JPEG labelled by Kaggle's LOC_val_solution.csv (or by the TF converters' file of one
  wnid per line in file order). Labels are the 0-based index of the wnid in sorted order.
- Folders: DIR/<class>/* split per class by `validation_fraction` and `seed`, or DIR/train/<class>/*
  and DIR/val/<class>/* as given.

Every image is decoded once, so the files that would stop a training run days in (empty,
truncated, corrupt, not an image) are skipped and listed with a reason. RGB JPEGs are copied byte
for byte; CMYK and grayscale JPEGs and other formats (a PNG named .JPEG) are re-encoded as RGB: as
JPEG, or for folders as PNG when the input was lossless (JPEG would smear small images).

Each split is shuffled with the seed and cut into contiguous shards, so a shard's bytes depend only
on its inputs and two runs give byte-identical shards. A shard is written under a temporary name and
renamed, then `.convert/<shard>.json` records its fingerprint (its files' names, labels, sizes and
mtimes), record count and skips; a run started again skips every shard whose record still matches.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import hashlib
import json
import math
import multiprocessing
import multiprocessing.pool
import os

import numpy as np
import tensorflow as tf

from mobilenet_tf.data import convert_worker, tfrecord
from mobilenet_tf.errors import UserError, tf_message
from mobilenet_tf.rundir import write_atomic

FORMAT_VERSION = 1  # bump when the bytes written for the same input change
JPEG_QUALITY = 95
STATE_DIR = ".convert"
IMAGENET_SHARDS = {"train": 1024, "validation": 128}
VALIDATION_FOLDERS = ("val", "validation")


class ConvertError(UserError, ValueError):
    """Inputs that cannot be converted; the message names the flag or the file."""


class SkipImage(Exception):
    """A file that is not a usable image; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One input file and its label."""

    path: str
    file: str  # relative to the input directory: how skip lists name it
    label: int
    size: int = 0
    mtime_ns: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to write: the classes, and each split's files in the order they are written."""

    name: str
    synsets: tuple[str, ...]  # class folder names (wnids for ImageNet), in label order
    texts: tuple[str, ...]  # human-readable names, "" when unknown
    splits: dict  # split -> tuple[Item, ...]
    lossless: bool = False  # re-encode lossless inputs as PNG rather than JPEG
    skipped: tuple = ()  # files dropped while planning: ({"file": ..., "reason": ...}, ...)
    empty_classes: tuple[str, ...] = ()  # class folders without a file for training: see `empty_class_warning`

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(text or synset for synset, text in zip(self.synsets, self.texts))


# --- Planning -------------------------------------------------------------------------------------


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _items(folder: str, root: str, label: int) -> list[Item]:
    """The visible regular files of `folder`, sorted by name, labelled `label`."""
    with os.scandir(folder) as entries:
        files = sorted((e for e in entries if e.is_file() and not e.name.startswith(".")), key=lambda e: e.name)
    items = []
    for entry in files:
        stat = entry.stat()
        items.append(Item(entry.path, os.path.relpath(entry.path, root), label, stat.st_size, stat.st_mtime_ns))
    return items


def _shuffled(items: list[Item], seed: int, split: str) -> tuple[Item, ...]:
    """Items in a seeded order, so that no shard holds a few classes only."""
    rng = np.random.default_rng([seed, tfrecord.SPLITS.index(split)])
    return tuple(items[i] for i in rng.permutation(len(items)))


def _check_dir(flag: str, path: str) -> str:
    if not path or not os.path.isdir(path):
        raise ConvertError(f"--{flag}={path}: no such directory")
    return os.path.abspath(path)


def read_synset_words(path: str) -> dict[str, str]:
    """wnid -> text from LOC_synset_mapping.txt (or synset_words.txt): `n01440764 tench, Tinca tinca`."""
    words = {}
    try:
        with open(path) as f:
            for line in f:
                wnid, _, text = line.strip().partition(" ")
                if wnid:
                    words[wnid] = text.strip()
    except OSError as error:
        raise ConvertError(f"--synset_words={path}: {error.strerror}") from None
    return words


def read_validation_labels(path: str, filenames: list[str]) -> dict[str, str]:
    """filename -> wnid, from Kaggle's LOC_validation_solution.csv (`ImageId,PredictionString` with the
    wnid first), or from a text file of one wnid per line in sorted filename order (the TF converters')."""
    try:
        with open(path, newline="") as f:
            if path.lower().endswith(".csv"):
                rows = list(csv.reader(f))
                if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
                    raise ConvertError(f"--validation_labels={path}: expected the header ImageId,PredictionString")
                by_id = {row[0].strip(): row[1].split()[0] for row in rows[1:] if len(row) > 1 and row[1].split()}
                return {name: by_id[stem] for name in filenames if (stem := os.path.splitext(name)[0]) in by_id}
            wnids = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise ConvertError(f"--validation_labels={path}: {error.strerror}") from None
    if len(wnids) != len(filenames):
        raise ConvertError(f"--validation_labels={path}: {len(wnids)} labels for the {len(filenames)} files in val/")
    return dict(zip(sorted(filenames), wnids))


def plan_imagenet(input_dir: str, *, validation_labels: str = "", synset_words: str = "", seed: int = 0) -> Plan:
    """The ILSVRC2012 layout under `input_dir` (see the module docstring)."""
    root = _check_dir("input_dir", input_dir)
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    has_train, has_val = os.path.isdir(train_dir), os.path.isdir(val_dir)
    if not has_train and not has_val:
        raise ConvertError(f"--input_dir={input_dir}: no train/ or val/ folder (expected ROOT/train/<wnid>/*.JPEG "
                           f"and ROOT/val/)")
    words = read_synset_words(synset_words) if synset_words else {}
    val_classes = _subdirs(val_dir) if has_val else []
    if has_train:
        wnids = _subdirs(train_dir)
    else:
        wnids = val_classes or sorted(words)
    if not wnids:
        raise ConvertError(f"--input_dir={input_dir}: no class folders in train/ (and no --synset_words to name "
                           f"the classes)")
    if words:
        missing = [w for w in wnids if w not in words]
        if missing:
            raise ConvertError(f"--synset_words={synset_words}: no line for {missing[0]} "
                               f"({len(missing)} of the {len(wnids)} classes missing)")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    splits, skipped = {}, []
    if has_train:
        items = [it for wnid in wnids for it in _items(os.path.join(train_dir, wnid), root, index[wnid])]
        splits["train"] = _shuffled(items, seed, "train")
    if has_val and val_classes:
        if validation_labels:
            raise ConvertError(f"--validation_labels={validation_labels}: val/ already has class folders")
        unknown = [c for c in val_classes if c not in index]
        if unknown:
            raise ConvertError(f"--input_dir={input_dir}: val/{unknown[0]} is not a class of train/")
        items = [it for wnid in val_classes for it in _items(os.path.join(val_dir, wnid), root, index[wnid])]
        splits["validation"] = _shuffled(items, seed, "validation")
    elif has_val:
        flat = _items(val_dir, root, -1)
        if flat and not validation_labels:
            raise ConvertError(f"--input_dir={input_dir}: val/ holds the images flat; give their labels with "
                               f"--validation_labels=LOC_val_solution.csv")
        labels = read_validation_labels(validation_labels, [os.path.basename(it.file) for it in flat]) if flat else {}
        items = []
        for it in flat:
            wnid = labels.get(os.path.basename(it.file))
            if wnid is None:
                skipped.append({"file": it.file, "reason": f"no label in {os.path.basename(validation_labels)}"})
            elif wnid not in index:
                skipped.append({"file": it.file, "reason": f"label {wnid} is not a class of train/"})
            else:
                items.append(dataclasses.replace(it, label=index[wnid]))
        splits["validation"] = _shuffled(items, seed, "validation")
    return Plan(
        name="imagenet", synsets=tuple(wnids), texts=tuple(words.get(w, "") for w in wnids), splits=splits,
        skipped=tuple(skipped),
    )


def plan_folder(input_dir: str, *, validation_fraction: float = 0.2, seed: int = 0) -> Plan:
    """Class subfolders of `input_dir`, or its train/ and val/ (see the module docstring).

    Without train/ and val/, each class is split on its own (so every class is held out in the same
    proportion): its files in name order, permuted by (seed, class index), the first
    round(fraction * n) held out.
    """
    root = _check_dir("input_dir", input_dir)
    name = os.path.basename(root)
    train_dir = os.path.join(root, "train")
    val_dir = next((os.path.join(root, v) for v in VALIDATION_FOLDERS if os.path.isdir(os.path.join(root, v))), "")
    splits = {}
    if os.path.isdir(train_dir) and val_dir:
        classes = _subdirs(train_dir)
        unknown = [c for c in _subdirs(val_dir) if c not in classes]
        if unknown:
            raise ConvertError(f"--input_dir={input_dir}: {os.path.basename(val_dir)}/{unknown[0]} is not a class "
                               f"of train/")
        for split, folder in (("train", train_dir), ("validation", val_dir)):
            items = [it for c, cls in enumerate(classes) if os.path.isdir(os.path.join(folder, cls))
                     for it in _items(os.path.join(folder, cls), root, c)]
            splits[split] = _shuffled(items, seed, split)
    else:
        classes = _subdirs(root)
        if not classes:
            raise ConvertError(f"--input_dir={input_dir}: no class subfolders (expected DIR/<class>/<images>, or "
                               f"DIR/train/<class>/ and DIR/val/<class>/)")
        train, validation = [], []
        for c, cls in enumerate(classes):
            items = _items(os.path.join(root, cls), root, c)
            held_out = round(validation_fraction * len(items))
            order = np.random.default_rng([seed, c]).permutation(len(items))
            validation += [items[i] for i in order[:held_out]]
            train += [items[i] for i in order[held_out:]]
        splits["train"] = _shuffled(train, seed, "train")
        if validation_fraction > 0:
            if not validation:
                raise ConvertError(f"--validation_fraction={validation_fraction}: holds out no image of the "
                                   f"{len(train)} in {input_dir}; raise it")
            splits["validation"] = _shuffled(validation, seed, "validation")
    if not any(splits.values()):
        raise ConvertError(f"--input_dir={input_dir}: the class folders hold no files")
    trained = {item.label for item in splits["train"]}
    empty = tuple(cls for c, cls in enumerate(classes) if c not in trained)
    return Plan(name=name, synsets=tuple(classes), texts=("",) * len(classes), splits=splits, lossless=True,
                empty_classes=empty)


def empty_class_warning(plan: Plan, input_dir: str) -> str | None:
    """A line naming the class folders that give no training file (they still take a label), or None."""
    if not plan.empty_classes:
        return None
    names = ", ".join(plan.empty_classes[:10]) + (f" and {len(plan.empty_classes) - 10} more"
                                                   if len(plan.empty_classes) > 10 else "")
    return (f"{input_dir}: {len(plan.empty_classes)} class folder(s) without training files: {names}; each is still "
            f"a class of the model, which no example teaches: add images or remove the folder")


def auto_shards(num_examples: int) -> int:
    """About 1000 examples per shard, at most 1024 shards."""
    return min(1024, max(1, math.ceil(num_examples / 1000)))


# --- One image ------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    return "image"


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame: not DHT, JPG, DAC


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, colour components: 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK) from a JPEG's frame
    header, or None. Read in Python: tf.image.extract_jpeg_shape costs a tenth of a decode in eager
    dispatch."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF_MARKERS:
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big"), data[i + 9]
        elif marker == 0xDA:  # a scan before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _is_truncated(kind: str, data: bytes) -> bool:
    tail = data.rstrip(b"\0\r\n ")
    if kind == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if kind == "PNG":
        return b"IEND" not in tail[-12:]
    return False


def encode_image(data: bytes, lossless: bool = False) -> tuple[bytes, str, int, int]:
    """(RGB image bytes, "JPEG" or "PNG", height, width) of a file's bytes; raises SkipImage.

    Every byte of the image is decoded once: that is what finds truncated and corrupt files. An RGB
    JPEG, kept as it is, is decoded at 1/8 scale: libjpeg still entropy-decodes every block (where
    all of its errors arise) but skips most of the inverse DCT, upsampling and colour conversion,
    which cannot fail; that saves about a quarter of a full decode.
    """
    if not data:
        raise SkipImage("empty file")
    kind = _sniff(data)
    header = jpeg_header(data) if kind == "JPEG" else None
    keep = header is not None and header[2] == 3 and min(header[:2]) > 0
    try:
        if keep:
            tf.io.decode_jpeg(data, channels=3, ratio=8)
            return data, "JPEG", header[0], header[1]
        if kind == "JPEG":
            pixels = tf.io.decode_jpeg(data, channels=3)  # CMYK and grayscale come out RGB
        else:
            pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        message = tf_message(error)
        if kind == "image" and "Unknown image file format" in message:
            raise SkipImage("not an image") from None
        if _is_truncated(kind, data):
            raise SkipImage(f"truncated {kind}") from None
        raise SkipImage(f"corrupt {kind} ({message})") from None
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if lossless and kind != "JPEG":
        return tf.io.encode_png(pixels).numpy(), "PNG", height, width
    return tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY).numpy(), "JPEG", height, width


# --- Writing --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    path: str  # the shard
    state_path: str
    fingerprint: str
    items: tuple[Item, ...]
    synsets: tuple[str, ...]
    texts: tuple[str, ...]
    lossless: bool
    strict: bool


_counter = None  # images done, shared with the parent (set in each worker)


def init_worker(counter, threads: int = 0) -> None:
    """Share the progress counter; in a worker process (see convert_worker), `threads=1` as the
    workers are the parallelism."""
    global _counter
    _counter = counter
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _write_shard(task: _Task) -> dict:
    """Write one shard; returns (and stores) its state record: fingerprint, count, skipped."""
    skipped = []

    def records():
        for item in task.items:
            try:
                try:
                    with open(item.path, "rb") as f:
                        data = f.read()
                except OSError as error:
                    raise SkipImage(f"unreadable ({error.strerror})") from None
                encoded, image_format, height, width = encode_image(data, task.lossless)
            except SkipImage as reason:
                if task.strict:
                    raise ConvertError(f"--strict: {item.file}: {reason}") from None
                skipped.append({"file": item.file, "reason": str(reason)})
                continue
            finally:
                with _counter.get_lock():
                    _counter.value += 1
            yield tfrecord.make_example(
                encoded, label=item.label, height=height, width=width, channels=3, image_format=image_format,
                filename=os.path.basename(item.path), synset=task.synsets[item.label], text=task.texts[item.label],
            )

    tfrecord.write_shard(task.path, records())
    state = {"fingerprint": task.fingerprint, "count": len(task.items) - len(skipped), "skipped": skipped}
    write_atomic(task.state_path, json.dumps(state))
    return state


def _fingerprint(plan: Plan, items) -> str:
    rows = [(it.file, it.label, plan.synsets[it.label], plan.texts[it.label], it.size, it.mtime_ns) for it in items]
    text = json.dumps([FORMAT_VERSION, JPEG_QUALITY, plan.lossless, rows])
    return hashlib.sha1(text.encode()).hexdigest()


def _read_state(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _clean(output_dir: str, split: str, keep: set[str]) -> None:
    """Remove temporaries of interrupted runs and shards of `split` from runs with another shard count."""
    state_dir = os.path.join(output_dir, STATE_DIR)
    for path in glob.glob(os.path.join(output_dir, f"{split}-?????-of-?????*")):
        name = os.path.basename(path)
        if ".tmp-" in name or name not in keep:
            os.remove(path)
            if name not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(state_dir, f"{name}.json"))


def check_shards(plan: Plan, shards: dict) -> None:
    """Raise ConvertError when a split has more shards than files (flags --train_shards, ...)."""
    for split, items in plan.splits.items():
        if items and not 1 <= shards[split] <= len(items):
            raise ConvertError(f"--{split}_shards={shards[split]}: must be between 1 and the {len(items)} "
                               f"{split} files")


def write(plan: Plan, output_dir: str, *, shards: dict | None = None, num_workers: int = 0, strict: bool = False,
          progress=None) -> tfrecord.DatasetInfo:
    """Write `plan` as shards and dataset_info.json under `output_dir`; returns the DatasetInfo.

    `shards`: split -> number of shards (default `auto_shards`). `num_workers`: processes (0: in this
    process, on a thread). `strict`: raise ConvertError at the first file that would be skipped.
    `progress(done, total)` is called at the start and then about twice a second with the number of
    files done (those of shards complete from an earlier run count as done from the start).
    """
    if strict and plan.skipped:
        raise ConvertError(f"--strict: {plan.skipped[0]['file']}: {plan.skipped[0]['reason']}")
    shards = {split: (shards or {}).get(split) or auto_shards(len(items)) for split, items in plan.splits.items()}
    check_shards(plan, shards)
    state_dir = os.path.join(output_dir, STATE_DIR)
    os.makedirs(state_dir, exist_ok=True)
    states, tasks, total, done = {}, [], 0, 0
    for split, items in plan.splits.items():
        names = []
        num_shards = shards[split] if items else 0
        for index in range(num_shards):
            chunk = items[index * len(items) // num_shards : (index + 1) * len(items) // num_shards]
            name = tfrecord.shard_name(split, index, num_shards)
            names.append(name)
            path, state_path = os.path.join(output_dir, name), os.path.join(state_dir, f"{name}.json")
            fingerprint = _fingerprint(plan, chunk)
            state = _read_state(state_path)
            total += len(chunk)
            if state and state.get("fingerprint") == fingerprint and os.path.isfile(path):
                states[name] = state
                done += len(chunk)
            else:
                tasks.append(_Task(path, state_path, fingerprint, chunk, plan.synsets, plan.texts, plan.lossless,
                                   strict))
        _clean(output_dir, split, set(names))
    for split in set(tfrecord.SPLITS) - set(plan.splits):  # e.g. an earlier run held out a validation split
        _clean(output_dir, split, set())

    if progress:
        progress(done, total)
    if tasks:
        states.update(_run(tasks, num_workers, progress, done, total))
    counts, skipped = {}, list(plan.skipped)
    for name in sorted(states):
        split = name.split("-")[0]
        counts[split] = counts.get(split, 0) + states[name]["count"]
        skipped += states[name]["skipped"]
    info = tfrecord.DatasetInfo(
        name=plan.name, num_classes=len(plan.synsets), class_names=plan.class_names, counts=counts,
        synsets=plan.synsets, skipped=tuple(sorted(skipped, key=lambda s: s["file"])),
    )
    tfrecord.write_info(output_dir, info)
    return dataclasses.replace(info, data_dir=output_dir)


def _run(tasks: list[_Task], num_workers: int, progress, done: int, total: int) -> dict:
    """Run the shard tasks on `num_workers` processes (0: one thread here); name -> state."""
    # spawn, not fork: the parent may have TensorFlow's thread pools running.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    if num_workers > 0:
        pool = context.Pool(min(num_workers, len(tasks)), initializer=convert_worker.init, initargs=(counter,))
    else:
        pool = multiprocessing.pool.ThreadPool(1, initializer=init_worker, initargs=(counter,))
    states = {}
    try:
        with pool:  # leaving it terminates the workers, also on an error
            _collect(pool, tasks, states, counter, progress, done, total)
    except BaseException:
        # Workers stopped mid-shard leave their temporary files: remove them (a full disk needs the room).
        for task in tasks:
            for tmp in glob.glob(f"{glob.escape(task.path)}.tmp-*"):
                with contextlib.suppress(OSError):
                    os.remove(tmp)
        raise
    return states


def _collect(pool, tasks: list[_Task], states: dict, counter, progress, done: int, total: int) -> None:
    """Start the tasks on `pool` and gather their states into `states` as they finish."""
    pending = [(os.path.basename(t.path), pool.apply_async(_write_shard, (t,))) for t in tasks]
    while pending:
        pending[0][1].wait(0.5)
        still = []
        for name, result in pending:
            if result.ready():
                states[name] = result.get()  # re-raises a worker's error
            else:
                still.append((name, result))
        pending = still
        if progress:
            progress(done + counter.value, total)
    pool.close()
    pool.join()


def default_num_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
