"""Top-1/top-5 of a model on a data set's validation split, under any strategy."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mobilenet_tf.config import Config
from mobilenet_tf.data import pipeline, tfrecord


def eval_dataset(strategy: tf.distribute.Strategy, info: tfrecord.DatasetInfo, cfg: Config, split="validation"):
    """The distributed evaluation dataset of `split`, padded to whole batches (labels -1)."""
    return strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.build_dataset(
            info, cfg.data, split=split, global_batch_size=cfg.train.batch_size,
            image_size=cfg.model.image_size, training=False, input_context=ctx,
        )
    )


def make_eval_step(strategy: tf.distribute.Strategy, model: keras.Model):
    """A tf.function: distributed batch -> (summed [top-1 hits, top-5 hits, examples], summed
    confusion matrix [true, predicted])."""
    num_classes = model.output_shape[-1]

    def replica_step(images, labels):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        k = min(5, probabilities.shape[-1])
        real = tf.cast(labels >= 0, tf.float32)  # label -1: padding to whole batches
        # top_k breaks ties by the lower class id, the answer an application gets (in_top_k would
        # count every tied class as a hit, which flatters quantized models).
        _, top = tf.math.top_k(probabilities, k)
        correct = tf.equal(top, labels[:, None])
        hits = [tf.reduce_sum(real * tf.cast(tf.reduce_any(correct[:, :n], axis=1), tf.float32)) for n in (1, k)]
        confusion = tf.math.confusion_matrix(tf.maximum(labels, 0), top[:, 0], num_classes=num_classes,
                                             weights=real, dtype=tf.float32)
        return tf.stack(hits + [tf.reduce_sum(real)]), confusion

    @tf.function
    def step(batch):
        totals, confusion = strategy.run(replica_step, args=batch)
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, totals, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, confusion, axis=None))

    return step


def evaluate(strategy, model, dataset, step=None, with_confusion: bool = False):
    """{"top1", "top5", "examples"} of `model` over the distributed `dataset`; with
    `with_confusion`, (that, the int64 confusion matrix [true class, predicted class])."""
    step = step or make_eval_step(strategy, model)
    totals, confusion = tf.zeros([3]), None
    for batch in dataset:
        batch_totals, batch_confusion = step(batch)
        totals += batch_totals
        confusion = batch_confusion if confusion is None else confusion + batch_confusion
    top1, top5, examples = (float(v) for v in totals.numpy())
    metrics = {"top1": top1 / max(examples, 1), "top5": top5 / max(examples, 1), "examples": int(examples)}
    if with_confusion:
        return metrics, np.rint(confusion.numpy()).astype(np.int64)
    return metrics
