"""`build_dataset`: record shards -> batches of (pixels in [-1, 1], int32 label), train or eval.

Training data order is a pure function of (seed, epoch): file order and the shuffle buffer are
seeded per epoch, and each example's augmentation is seeded by (seed, epoch, its position). A
resumed run therefore replays exactly the batches an uninterrupted run would have seen, by
skipping the consumed examples before anything is decoded.

Bad records (a shard with a bad checksum or cut short, an image that does not decode) stop a run:
`naming_bad_records` turns the input's error into `BadRecords` naming the shard and record. With
`DataConfig.skip_bad_records` they are dropped instead: a shard that cannot be read further ends
there, an example that fails to decode is left out, and each training batch carries how many were
dropped for it (up to `max_bad_records` per epoch). Dropping is paid only by runs that ask for it:
the ordinary pipeline has no extra stage. A resumed run that had skipped records earlier in the
same epoch continues at the same raw position, so it is no longer bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math

import tensorflow as tf
from absl import logging

from mobilenet_tf.config import DataConfig
from mobilenet_tf.data import augment, preprocess, tfrecord
from mobilenet_tf.errors import UserError, tf_message

AUTOTUNE = tf.data.AUTOTUNE
# A TFRecord's framing around its data: length (8 bytes) and two CRCs (4 each).
RECORD_OVERHEAD = 16


class BadRecords(UserError, ValueError):
    """Training data that cannot be read or decoded; the message names the shard (and record)."""


def epoch_seed(seed: int | tf.Tensor, epoch: int | tf.Tensor) -> tf.Tensor:
    """One int64 seed per (run seed, epoch)."""
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)


@contextlib.contextmanager
def _tensor_seeds_allowed():
    """Let `shuffle(seed=<tensor>)` trace while a global seed is set.

    tf.data accepts tensor seeds, but its seed helper compares (global, op) seeds in Python and
    fails on a tensor when the global seed is 0. The per-epoch seeds are complete on their own,
    so the traced graph's global seed is set aside while the epoch's dataset is built.
    """
    graph = tf.compat.v1.get_default_graph()
    saved, graph.seed = graph.seed, None
    try:
        yield
    finally:
        graph.seed = saved


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    return num_examples // global_batch_size


def per_replica_batch_size(global_batch_size: int, input_context: tf.distribute.InputContext | None) -> int:
    """The one place the per-replica batch is derived from the global one."""
    if input_context is None:
        return global_batch_size
    return input_context.get_per_replica_batch_size(global_batch_size)


def max_bad_records(data: DataConfig, info: tfrecord.DatasetInfo) -> int:
    """--max_bad_records, by default 0.1% of an epoch's training examples (at least 1)."""
    if data.max_bad_records is not None:
        return data.max_bad_records
    return max(1, math.ceil(0.001 * info.counts["train"]))


def _file_sizes(files) -> tf.Tensor:
    return tf.constant([tf.io.gfile.stat(path).length for path in files], tf.int64)


def _guarded_records(path: tf.Tensor, size: tf.Tensor) -> tf.data.Dataset:
    """The records of one file; where a record cannot be read (bad checksum, file cut short) the
    file ends, with one empty record in its place that fails to parse downstream and is counted
    there as a bad record."""
    records = tf.data.TFRecordDataset(path).map(lambda record: (record, False)).ignore_errors()
    records = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))

    def account(read, element):
        record, end = element
        # The end marker is kept only when the bytes read fall short of the file: a read failed.
        keep = tf.logical_or(tf.logical_not(end), tf.not_equal(read, size))
        read += tf.cast(tf.strings.length(record), tf.int64) + RECORD_OVERHEAD
        return read, (record, keep)

    records = records.scan(tf.constant(0, tf.int64), account)
    return records.filter(lambda record, keep: keep).map(lambda record, keep: record)


def _records(files: list[str], data: DataConfig, input_context, shuffle_seed=None) -> tf.data.Dataset:
    """Encoded records of this input pipeline's share of `files` (guarded: see `_guarded_records`,
    with `data.skip_bad_records`)."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    guarded = data.skip_bad_records
    ds = tf.data.Dataset.from_tensor_slices((files, _file_sizes(files)) if guarded else files)
    # Shard by file when there are enough files (no worker reads what it drops), else by record.
    by_file = len(files) >= num_pipelines
    if by_file and num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(files), seed=shuffle_seed)
    ds = ds.interleave(
        _guarded_records if guarded else tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if not by_file and num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    return ds


def _eval_dataset(info, data, split, image_size, batch_size, replicas_per_pipeline, input_context):
    """The split once, in order, padded with label -1 examples to whole batches on every replica.

    Every replica of every worker gets the same number of full batches: an empty or ragged last
    batch would trace the model with a zero-sized batch (Keras 3 then mistakes an Add for a bias
    add) and make workers wait on each other. Records are sharded one by one across pipelines, so
    each pipeline's share is known from the split's count; `evaluate` ignores labels < 0.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    files = info.files(split)
    if data.skip_bad_records:
        ds = tf.data.Dataset.from_tensor_slices((files, _file_sizes(files))).interleave(
            _guarded_records, cycle_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, input_context.input_pipeline_id)
    ds = ds.map(info.parse, num_parallel_calls=AUTOTUNE)
    if data.cache:
        ds = ds.cache()
    ds = ds.map(
        lambda encoded, label: (preprocess.eval_image(encoded, image_size, data.eval_crop_fraction, data.eval_transform), label),
        num_parallel_calls=AUTOTUNE,
    )
    if data.skip_bad_records:  # the padding below fills in for dropped examples (label -1: not counted)
        ds = ds.ignore_errors()
    unit = batch_size * replicas_per_pipeline
    share = -(-info.counts[split] // num_pipelines)
    padding = tf.data.Dataset.from_tensors((tf.zeros([*image_size, 3]), tf.constant(-1, tf.int32))).repeat()
    return ds.concatenate(padding).take(-(-share // unit) * unit).batch(batch_size).prefetch(AUTOTUNE)


def build_dataset(
    info: tfrecord.DatasetInfo,
    data: DataConfig,
    *,
    split: str,
    global_batch_size: int,
    image_size: tuple[int, int],
    training: bool,
    seed: int = 0,
    epochs: tuple[int, int] = (0, 1),
    skip_steps: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_classes: int | None = None,
) -> tf.data.Dataset:
    """Batches for one input pipeline.

    Training: epochs `epochs[0]` to `epochs[1] - 1`, each exactly `steps_per_epoch` batches per
    replica (every worker runs the same number of steps), the first `skip_steps` steps of the
    first epoch skipped. Evaluation: the split once, in file order, padded to whole batches with
    label -1 examples.
    With MixUp or CutMix on (training), labels are float32 [batch, num_classes] (default: the data
    set's classes) instead of int32 [batch].
    """
    files = info.files(split)
    batch_size = per_replica_batch_size(global_batch_size, input_context)
    replicas_per_pipeline = (
        input_context.num_replicas_in_sync // input_context.num_input_pipelines if input_context else 1
    )
    if not training:
        return _eval_dataset(info, data, split, image_size, batch_size, replicas_per_pipeline, input_context)
    examples_per_epoch = steps_per_epoch(info.counts[split], global_batch_size) * batch_size * replicas_per_pipeline
    skip_examples = skip_steps * batch_size * replicas_per_pipeline
    cached = _records(files, data, input_context).cache() if data.cache else None
    mix = bool(data.mixup_alpha or data.cutmix_alpha)

    def example(record, example_seed):
        # Records are shuffled raw and parsed here, in the same parallel map as the decode: one
        # stage less per example than parsing before the shuffle, and the same order.
        encoded, label = info.parse(record)
        image = preprocess.train_image(encoded, example_seed, image_size, data)
        return (image, label, example_seed) if mix else (image, label)

    def one_epoch(epoch):
        with _tensor_seeds_allowed():
            return _one_epoch(epoch)

    def _one_epoch(epoch):
        eseed = epoch_seed(seed, epoch)
        ds = cached if cached is not None else _records(files, data, input_context, shuffle_seed=eseed)
        # repeat + take: a pipeline whose shards hold fewer examples wraps around, so all
        # pipelines yield the same number of batches (a multi-worker step needs every worker).
        ds = ds.shuffle(data.shuffle_buffer, seed=eseed).repeat()
        if not data.skip_bad_records:
            ds = ds.take(examples_per_epoch).enumerate()
            return ds.map(lambda i, record: (record, tf.stack([eseed, i])))
        # Dropping examples that fail: the epoch takes as many good ones as it needs, and the gaps
        # in the positions of those that pass count the dropped ones.
        first = tf.where(tf.equal(epoch, epochs[0]), tf.constant(skip_examples, tf.int64), 0)
        ds = ds.enumerate().skip(first)
        ds = ds.map(lambda i, record: (*example(record, tf.stack([eseed, i])), i), num_parallel_calls=AUTOTUNE)
        ds = ds.ignore_errors().scan(first - 1, lambda last, e: (e[-1], (*e[:-1], e[-1] - last - 1)))
        return ds.take(examples_per_epoch - first)

    ds = tf.data.Dataset.range(epochs[0], epochs[1]).flat_map(one_epoch)
    if not data.skip_bad_records:
        ds = ds.skip(skip_examples)
        ds = ds.map(example, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if data.skip_bad_records:  # per batch: the number of examples dropped for it
        ds = ds.map(lambda *batch: (*batch[:-1], tf.reduce_sum(batch[-1])))
    if mix:
        # Labels become soft [batch, num_classes]. The batch's seed is its first example's: unique,
        # and replayed by a resumed run like the crops.
        ds = ds.map(
            lambda images, labels, seeds, *bad: (augment.mix_batch(
                images, labels, seeds[0], num_classes or info.num_classes, data.mixup_alpha, data.cutmix_alpha
            ) + tuple(bad)),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.prefetch(AUTOTUNE)


def locate_bad_record(info: tfrecord.DatasetInfo, split: str, decode: bool = True) -> tuple[str, int, str] | None:
    """(file, record index in it, reason) of the first record of `split` that cannot be read (or,
    with `decode`, parsed and decoded), or None.

    Every file is read once, several in parallel; with `decode` every image is decoded too, which
    on an ImageNet-sized split takes an epoch's decoding.
    """
    files = info.files(split)
    sizes = _file_sizes(files)

    def check(index, record):
        encoded, _ = info.parse(record)
        # The image's shape is an output, so the decode cannot be pruned away.
        return index, record, tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))

    def scan_file(path, size):
        # (index of the first record that fails, bytes of the records that pass): a read error
        # ends the file there, a decode error leaves a gap at its index; either way the bytes fall
        # short of the file's size.
        records = tf.data.TFRecordDataset(path).enumerate()
        if decode:
            records = records.map(check)
        records = records.ignore_errors()

        def step(state, element):
            expected, read = state
            index, record = element[:2]
            expected = tf.where(tf.equal(index, expected), expected + 1, expected)
            return expected, read + tf.cast(tf.strings.length(record), tf.int64) + RECORD_OVERHEAD

        expected, read = records.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
        return path, expected, tf.not_equal(read, size)

    scans = tf.data.Dataset.from_tensor_slices((files, sizes)).map(
        scan_file, num_parallel_calls=AUTOTUNE, deterministic=True)
    for path, index, bad in scans.as_numpy_iterator():
        if bad:
            path, index = path.decode(), int(index)
            return path, index, _bad_record_reason(info, path, index)
    return None


def _bad_record_reason(info: tfrecord.DatasetInfo, path: str, index: int) -> str:
    try:
        records = list(tf.data.TFRecordDataset(path).skip(index).take(1).as_numpy_iterator())
    except tf.errors.OpError as error:
        return f"unreadable ({tf_message(error)})"
    if not records:
        return "the file ends inside it (truncated)"
    try:
        encoded, _ = info.parse(tf.constant(records[0]))
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return f"its image does not decode ({tf_message(error)})"
    return "unreadable"


@contextlib.contextmanager
def naming_bad_records(info: tfrecord.DatasetInfo, split: str):
    """Inside, a read or decode error of the input pipeline becomes BadRecords naming the shard
    and the record (found by `locate_bad_record`), instead of TensorFlow's message."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        if "IteratorGetNext" not in str(error):
            raise
        logging.warning("a record of %s failed (%s): looking for it", split, tf_message(error))
        found = locate_bad_record(info, split, decode=not isinstance(error, tf.errors.DataLossError))
        hint = "write the shard again (mobilenet-convert), or pass --skip_bad_records to skip such records"
        if found is None:
            raise BadRecords(f"a {split} record failed ({tf_message(error)}); {hint}") from None
        path, index, reason = found
        raise BadRecords(f"{path}: record {index}: {reason}; {hint}") from None
