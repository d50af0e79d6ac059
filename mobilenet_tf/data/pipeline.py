"""`build_dataset`: record shards -> batches of (pixels in [-1, 1], int32 label), train or eval.

Training data order is a pure function of (seed, epoch): file order and the shuffle buffer are
seeded per epoch, and each example's augmentation is seeded by (seed, epoch, its position). A
resumed run therefore replays exactly the batches an uninterrupted run would have seen, by
skipping the consumed examples before anything is decoded.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from mobilenet_tf.config import DataConfig
from mobilenet_tf.data import augment, preprocess, tfrecord

AUTOTUNE = tf.data.AUTOTUNE


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


def _records(files: list[str], data: DataConfig, input_context, shuffle_seed=None) -> tf.data.Dataset:
    """(encoded, label) pairs of this input pipeline's share of `files`."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    ds = tf.data.Dataset.from_tensor_slices(files)
    # Shard by file when there are enough files (no worker reads what it drops), else by record.
    by_file = len(files) >= num_pipelines
    if by_file and num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(files), seed=shuffle_seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if not by_file and num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    return ds


def _eval_dataset(info, data, split, parse, image_size, batch_size, replicas_per_pipeline, input_context):
    """The split once, in order, padded with label -1 examples to whole batches on every replica.

    Every replica of every worker gets the same number of full batches: an empty or ragged last
    batch would trace the model with a zero-sized batch (Keras 3 then mistakes an Add for a bias
    add) and make workers wait on each other. Records are sharded one by one across pipelines, so
    each pipeline's share is known from the split's count; `evaluate` ignores labels < 0.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    ds = tf.data.Dataset.from_tensor_slices(info.files(split)).interleave(
        tf.data.TFRecordDataset, cycle_length=1, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, input_context.input_pipeline_id)
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    if data.cache:
        ds = ds.cache()
    ds = ds.map(
        lambda encoded, label: (preprocess.eval_image(encoded, image_size, data.eval_crop_fraction), label),
        num_parallel_calls=AUTOTUNE,
    )
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
    parse = lambda record: tfrecord.parse(record, info.label_offset, info.keys)  # noqa: E731

    replicas_per_pipeline = (
        input_context.num_replicas_in_sync // input_context.num_input_pipelines if input_context else 1
    )
    if not training:
        return _eval_dataset(info, data, split, parse, image_size, batch_size, replicas_per_pipeline, input_context)
    examples_per_epoch = steps_per_epoch(info.counts[split], global_batch_size) * batch_size * replicas_per_pipeline
    cached = _records(files, data, input_context).cache() if data.cache else None

    def one_epoch(epoch):
        with _tensor_seeds_allowed():
            return _one_epoch(epoch)

    def _one_epoch(epoch):
        eseed = epoch_seed(seed, epoch)
        ds = cached if cached is not None else _records(files, data, input_context, shuffle_seed=eseed)
        # repeat + take: a pipeline whose shards hold fewer examples wraps around, so all
        # pipelines yield the same number of batches (a multi-worker step needs every worker).
        ds = ds.shuffle(data.shuffle_buffer, seed=eseed).repeat().take(examples_per_epoch)
        return ds.enumerate().map(lambda i, record: (record, tf.stack([eseed, i])))

    mix = bool(data.mixup_alpha or data.cutmix_alpha)

    def example(record, example_seed):
        # Records are shuffled raw and parsed here, in the same parallel map as the decode: one
        # stage less per example than parsing before the shuffle, and the same order.
        encoded, label = parse(record)
        image = preprocess.train_image(encoded, example_seed, image_size, data)
        return (image, label, example_seed) if mix else (image, label)

    ds = tf.data.Dataset.range(epochs[0], epochs[1]).flat_map(one_epoch)
    ds = ds.skip(skip_steps * batch_size * replicas_per_pipeline)
    ds = ds.map(example, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True)
    if mix:
        # Labels become soft [batch, num_classes]. The batch's seed is its first example's: unique,
        # and replayed by a resumed run like the crops.
        ds = ds.map(
            lambda images, labels, seeds: augment.mix_batch(
                images, labels, seeds[0], num_classes or info.num_classes, data.mixup_alpha, data.cutmix_alpha
            ),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.prefetch(AUTOTUNE)
