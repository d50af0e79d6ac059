"""`train(cfg)`: one custom training loop for every tf.distribute strategy.

Keras 3 `model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
the loop is ours: `distribute_datasets_from_function` + `strategy.run` + a Keras 3 model and
optimizer, driving Keras callbacks (`keras.callbacks.CallbackList`) for progress and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from mobilenet_tf import config, distribute, evaluate, export, optim
from mobilenet_tf.checkpoint import CheckpointManagerCallback
from mobilenet_tf.config import Config
from mobilenet_tf.data import pipeline, sources, tfrecord
from mobilenet_tf.models import build_from_config


def model_dir_for(cfg: Config) -> str:
    """`--model_dir`, or runs/<model>_<dataset> (the data set name made path-safe)."""
    if cfg.train.model_dir:
        return cfg.train.model_dir
    name = cfg.data.dataset.replace(":", "_").replace("/", "_").strip("_")
    return os.path.join("runs", f"{cfg.model.name}_{name}")


def build_train_model(cfg: Config) -> keras.Model:
    """The model being trained (pixels in [-1, 1]); AdamW decays weights itself, not through L2."""
    return build_from_config(cfg.model, weight_decay=0.0 if cfg.train.optimizer == "adamw" else None)


def make_train_loop(strategy, model, optimizer, cfg: Config):
    """A tf.function running `num_steps` steps from a distributed iterator; returns mean loss, top-1."""
    global_batch = cfg.train.batch_size
    smoothing = cfg.train.label_smoothing
    num_replicas = strategy.num_replicas_in_sync

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = tf.cast(model(images, training=True), tf.float32)
            one_hot = tf.one_hot(labels, probabilities.shape[-1])
            per_example = keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=smoothing)
            # Mean over the global batch: the optimizer sums gradients over replicas.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.add_n(model.losses) / num_replicas
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        hits = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probabilities, 1), tf.float32))
        return tf.stack([loss, hits / global_batch])

    @tf.function
    def train_loop(iterator, num_steps):
        totals = tf.zeros([2])
        for _ in tf.range(num_steps):
            per_replica = strategy.run(replica_step, args=next(iterator))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals / tf.cast(num_steps, tf.float32)

    return train_loop


def _steps_to_next_stop(step: int, steps_per_epoch: int, every: int) -> int:
    """Steps until the next epoch end, log line or checkpoint, whichever is first."""
    n = steps_per_epoch - step % steps_per_epoch
    for period in every:
        if period:
            n = min(n, period - step % period)
    return n


def train(cfg: Config, strategy: tf.distribute.Strategy | None = None,
          datasets: tfrecord.DatasetInfo | None = None) -> dict:
    """Train (or resume) the run `cfg` describes; evaluate; export. Returns the final metrics."""
    keras.utils.set_random_seed(cfg.train.seed)

    # 1. Strategy.
    strategy = strategy or distribute.get_strategy(cfg.train.strategy)
    chief = distribute.is_chief(strategy)
    model_dir = model_dir_for(cfg)

    # 2. Data.
    info = datasets or sources.resolve(cfg.data)
    num_classes = cfg.model.num_classes or info.num_classes
    class_names = tuple(info.class_names) if len(info.class_names) == num_classes else tuple(map(str, range(num_classes)))
    cfg = config.replace(cfg, model={"num_classes": num_classes, "class_names": class_names})
    if chief:
        config.save(cfg, model_dir)
    steps_per_epoch = pipeline.steps_per_epoch(info.counts["train"], cfg.train.batch_size)
    total_steps = cfg.train.epochs * steps_per_epoch

    # 3. Model, optimizer and checkpoint under the strategy's scope.
    with strategy.scope():
        model = build_train_model(cfg)
        optimizer = optim.build_optimizer(cfg.train, steps_per_epoch, weight_decay=cfg.model.weight_decay)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)

    # 4. Callbacks; resume from the newest checkpoint.
    saver = CheckpointManagerCallback(
        checkpoint, model_dir, step=optimizer.iterations, every_steps=cfg.train.checkpoint_steps,
        keep=cfg.train.keep_checkpoints, is_chief=chief,
    )
    start_step = saver.restore()
    callbacks = keras.callbacks.CallbackList(
        [saver], add_progbar=chief, model=model, epochs=cfg.train.epochs, steps=steps_per_epoch,
        verbose=1 if sys.stdout.isatty() else 2,
    )

    # 5. The loop.
    train_loop = make_train_loop(strategy, model, optimizer, cfg)
    eval_step = evaluate.make_eval_step(strategy, model)
    eval_data = evaluate.eval_dataset(strategy, info, cfg)
    start_epoch = start_step // steps_per_epoch
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.build_dataset(
            info, cfg.data, split="train", global_batch_size=cfg.train.batch_size,
            image_size=cfg.model.image_size, training=True, seed=cfg.train.seed,
            epochs=(start_epoch, cfg.train.epochs), skip_steps=start_step % steps_per_epoch, input_context=ctx,
        )
    )
    iterator = iter(dataset)
    step = start_step
    logging.info(
        "Training %s on %s: %d steps/epoch, %d epochs, global batch %d, %d replica(s), starting at step %d; model_dir %s",
        model.name, info.name, steps_per_epoch, cfg.train.epochs, cfg.train.batch_size,
        strategy.num_replicas_in_sync, step, model_dir,
    )
    callbacks.on_train_begin()
    logs = {}
    while step < total_steps:
        epoch = step // steps_per_epoch
        if step % steps_per_epoch == 0 or step == start_step:
            callbacks.on_epoch_begin(epoch)
        num_steps = _steps_to_next_stop(step, steps_per_epoch, (cfg.train.log_steps, cfg.train.checkpoint_steps))
        started = time.perf_counter()
        loss, top1 = (float(v) for v in train_loop(iterator, tf.constant(num_steps)).numpy())
        elapsed = time.perf_counter() - started
        step += num_steps
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {step}: stopped; the newest checkpoint in {model_dir} is the last good one"
            )
        logs = {"loss": loss, "top1": top1, "lr": float(optimizer.learning_rate)}
        callbacks.on_train_batch_end((step - 1) % steps_per_epoch, logs)
        if cfg.train.log_steps and step % cfg.train.log_steps == 0:
            logging.info(
                "epoch %d step %d/%d loss %.4f top1 %.4f lr %.6f %.1f img/s", epoch + 1, step, total_steps, loss,
                top1, logs["lr"], num_steps * cfg.train.batch_size / elapsed,
            )
        if step % steps_per_epoch == 0:
            metrics = evaluate.evaluate(strategy, model, eval_data, eval_step)
            logs.update(val_top1=metrics["top1"], val_top5=metrics["top5"])
            callbacks.on_epoch_end(epoch, logs)
    callbacks.on_train_end(logs)

    # 6. Final evaluation and export.
    metrics = evaluate.evaluate(strategy, model, eval_data, eval_step)
    result = {"step": step, **metrics}
    if chief:
        result["export"] = export.export_saved_model(model, cfg, os.path.join(model_dir, "export"))
        with open(os.path.join(model_dir, "metrics.json"), "w") as f:
            json.dump(result, f)
    print(f"held-out top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  ({metrics['examples']} images)")
    return result


if __name__ == "__main__":  # `python -m mobilenet_tf.train` is `mobilenet-train`
    from mobilenet_tf.cli.train import run

    run()
