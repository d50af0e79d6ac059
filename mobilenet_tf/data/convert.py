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
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import multiprocessing.pool
import os

import tensorflow as tf

from mobilenet_tf import paths
from mobilenet_tf.data import convert_worker, tfrecord
from mobilenet_tf.errors import tf_message
from mobilenet_tf.data.plan import ConvertError, Item, Plan, auto_shards
from mobilenet_tf.rundir import write_atomic

FORMAT_VERSION = 1  # bump when the bytes written for the same input change
JPEG_QUALITY = 95
STATE_DIR = ".convert"
IMAGENET_SHARDS = {"train": 1024, "validation": 128}


class SkipImage(Exception):
    """A file that is not a usable image; the message is the reason."""


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
            name = paths.shard_name(split, index, num_shards)
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
    for split in set(paths.SPLITS) - set(plan.splits):  # e.g. an earlier run held out a validation split
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
