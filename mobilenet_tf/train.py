"""`train(cfg)`: one custom training loop for every tf.distribute strategy.

Keras 3 `model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
the loop is ours: `distribute_datasets_from_function` + `strategy.run` + a Keras 3 model and
optimizer, driving Keras callbacks (`keras.callbacks.CallbackList`): progress bar, TensorBoard
scalars, CSV and the checkpoint manager.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mobilenet_tf import config, distill, distribute, evaluate, export, kernels, optim, preemption, rundir
from mobilenet_tf.callbacks import ScalarsCallback
from mobilenet_tf.checkpoint import CheckpointManagerCallback, restore_model
from mobilenet_tf.config import Config
from mobilenet_tf.errors import UserError
from mobilenet_tf.data import pipeline, sources, tfrecord
from mobilenet_tf.models import HEAD_LAYERS, layers
from mobilenet_tf.watchdog import StepWatchdog
from mobilenet_tf.models.build import build_from_config, copy_weights
from mobilenet_tf.models.pretrained import load_pretrained


class Diverged(UserError, FloatingPointError):
    """The loss or the weights became non-finite; the message names the steps and the last good
    checkpoint."""


def model_dir_for(cfg: Config) -> str:
    """`--model_dir`, or runs/<model>_<dataset>[_qat] (the data set name made path-safe)."""
    if cfg.train.model_dir:
        return cfg.train.model_dir
    name = cfg.data.dataset.replace(":", "_").replace("/", "_").strip("_")
    return os.path.join("runs", f"{cfg.model.name}_{name}{'_qat' if cfg.model.qat else ''}")


def build_train_model(cfg: Config) -> keras.Model:
    """The model being trained (pixels in [-1, 1]); AdamW decays weights itself, not through L2.
    On a CPU its training step computes the 1x1 convolutions as MatMul
    (`layers.pointwise_convolutions_as_matmul`) and hard-swish with the native kernels
    (`kernels.prepare`), and under mixed bfloat16 only its convolutions compute in bfloat16
    (`bfloat16_convolutions`)."""
    model = build_from_config(cfg.model, weight_decay=0.0 if cfg.train.optimizer == "adamw" else None)
    if not on_accelerator():
        layers.pointwise_convolutions_as_matmul(model)
        kernels.prepare(model)
        if cfg.train.precision == "mixed_bfloat16":
            bfloat16_convolutions(model)
    return model


def bfloat16_convolutions(model: keras.Model) -> None:
    """Keep bfloat16 for the dense convolutions (Conv2D: the stem, 1x1 and fused-IB convs) and
    compute every other layer in float32. Measured on this CPU (benchmarks/train_throughput.py
    --profile on V2): oneDNN's bfloat16 Conv2D and its two backward kernels take 0.57-0.67x their
    float32 time, but the bfloat16 depthwise backward kernels 2.5-4.5x and ReLU6 and its gradient
    1.8-3x, so a whole-model bfloat16 step lost to float32 (0.5-0.8x) where this one gains.
    (DepthwiseConv2D is not a Conv2D in Keras 3.)"""
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) and layer.dtype_policy.name == "mixed_bfloat16":
            layer.dtype_policy = "float32"


def on_accelerator() -> bool:
    """A GPU or TPU is attached (its strategy already connected): XLA and whole-model bfloat16 pay there."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def initialize_weights(model: keras.Model, cfg: Config) -> None:
    """Starting weights of a new run: a timm checkpoint, keras.applications' ImageNet file or another
    run's checkpoint."""
    if cfg.train.pretrained:
        source = load_pretrained(model, cfg.model, cfg.train.pretrained)
        logging.info("Initialized from %s weights (%s)", source, cfg.train.pretrained)
    if cfg.train.init_checkpoint:
        path = cfg.train.init_checkpoint
        run_dir, ckpt = (path, None) if os.path.isdir(path) else (os.path.dirname(path), path)
        source, source_cfg = restore_model(run_dir, ckpt)
        same_head = source_cfg.model.num_classes == cfg.model.num_classes
        copy_weights(source, model, skip=() if same_head else HEAD_LAYERS)
        logging.info("Initialized from %s%s", path, "" if same_head else " (new classifier)")


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier. Batch norm stays frozen once a backbone
    was frozen: a frozen Keras BN runs in inference mode, keeping the pretrained statistics."""
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = trainable


def use_xla(cfg: Config, strategy: tf.distribute.Strategy) -> bool:
    """--xla=auto compiles on GPU/TPU only: on this CPU XLA made V2, V3-Large and V4-Conv-S steps 8-13x slower."""
    if cfg.train.xla != "auto":
        return cfg.train.xla == "true"
    return on_accelerator() or isinstance(strategy, tf.distribute.TPUStrategy)


def make_train_loop(strategy, model, optimizer, cfg: Config, jit_compile: bool = False, stop_flag=None,
                    teacher=None, progress=None):
    """A tf.function running up to `num_steps` steps from a distributed iterator. It returns a dict:
    "means" [mean loss, mean top-1, mean cross-entropy term, mean distillation term], "finite" (all
    weights finite afterwards), "steps" run, "stopped" and "bad_records".

    With a `teacher` (`distill.load_teacher`), its predictions on each batch enter the loss as
    `distill.losses` says. `progress` (an int64 variable) counts the steps as they complete, for
    `watchdog.StepWatchdog`.

    `stop_flag` (a variable, see `preemption.SignalFlag`) is read in every step and summed over all
    replicas and workers: once any is set, every worker stops after that same step ("stopped").
    Batches may carry a third component, the number of bad records the input dropped for them;
    "bad_records" is their sum over the steps run.
    """
    global_batch = cfg.train.batch_size
    smoothing = cfg.train.label_smoothing
    num_replicas = strategy.num_replicas_in_sync
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    variables = model.trainable_variables
    # The loss in the head's dtype: float32, or float64 for a float64 run.
    dtype = tf.float64 if cfg.train.precision == "float64" else tf.float32
    # The native kernels are CPU kernels without an XLA form.
    native = contextlib.nullcontext if jit_compile or on_accelerator() else kernels.native_ops
    if native is kernels.native_ops:
        kernels.library()  # compiled (once per machine) before the step is traced, not inside it

    def gradients(images, labels):
        # native() spans the tape's gradient too: the depthwise gradients are built there.
        with native(), tf.GradientTape() as tape, layers.pointwise_as_matmul():
            probabilities = tf.cast(model(images, training=True), dtype)
            # MixUp/CutMix batches come with soft labels [batch, classes]; others with class ids.
            if labels.dtype.is_floating:
                soft = tf.cast(labels, dtype)
            else:
                soft = tf.one_hot(labels, probabilities.shape[-1], dtype=dtype)
            taught = None if teacher is None else teacher(distill.teacher_inputs(images, teacher), training=False)
            per_example, hard, distilled = distill.losses(
                soft, probabilities, taught, weight=cfg.train.distill_weight,
                temperature=cfg.train.distill_temperature, label_smoothing=smoothing)
            # Mean over the global batch: the optimizer sums gradients over replicas.
            mean = lambda values: tf.nn.compute_average_loss(values, global_batch_size=global_batch)  # noqa: E731
            loss = mean(per_example)
            if model.losses:
                loss += tf.add_n([tf.cast(penalty, dtype) for penalty in model.losses]) / num_replicas
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            grads = tape.gradient(scaled, variables)
        classes = tf.argmax(labels, axis=-1, output_type=tf.int32) if labels.dtype.is_floating else labels
        hits = tf.reduce_sum(tf.cast(tf.math.in_top_k(classes, tf.cast(probabilities, tf.float32), 1), dtype))
        return loss, hits / global_batch, mean(hard), mean(distilled), grads

    if jit_compile:
        # Forward and backward only: the gradient all-reduce and update stay outside XLA.
        gradients = tf.function(gradients, jit_compile=True)

    def replica_step(images, labels, bad_records=None):
        loss, top1, hard, distilled, grads = gradients(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        stop = tf.zeros([], dtype) if stop_flag is None else tf.cast(stop_flag, dtype)
        bad = tf.zeros([], dtype) if bad_records is None else tf.cast(bad_records, dtype)
        return tf.stack([loss, top1, stop, bad, hard, distilled])

    @tf.function
    def train_loop(iterator, num_steps):
        totals = tf.zeros([6], dtype)
        steps = tf.constant(0)
        for _ in tf.range(num_steps):
            per_replica = strategy.run(replica_step, args=next(iterator))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            steps += 1
            if progress is not None:
                progress.assign_add(1)
            if totals[2] > 0:
                break
        # A finite loss can still be followed by an update to inf (weights or BN statistics): check
        # them too, so that a checkpoint is only ever written from finite weights.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in model.weights
                               if keras.backend.is_float_dtype(w.dtype)])
        means = tf.gather(totals, [0, 1, 4, 5]) / tf.cast(steps, dtype)
        return {"means": means, "finite": finite, "steps": steps, "stopped": totals[2] > 0,
                "bad_records": tf.cast(totals[3], tf.int64)}

    return train_loop


@contextlib.contextmanager
def averaged_weights(model: keras.Model, optimizer):
    """Inside, the model holds the moving average of its weights (when the run keeps one)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not inner.use_ema:
        yield
        return
    backup = [v.numpy() for v in model.trainable_variables]
    inner.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, backup):
            variable.assign(value)


def rng_states(model: keras.Model) -> tf.train.Checkpoint:
    """The random-number states of the model's layers (dropout), which tf.train.Checkpoint does not
    find through the Keras model but an exact resume needs."""
    return tf.train.Checkpoint(**{
        f"{layer.name}_{i}": generator.state
        for layer in model.layers for i, generator in enumerate(getattr(layer, "_seed_generators", []))
    })


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight (BN statistics included): equal digests, equal models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def _steps_to_next_stop(step: int, steps_per_epoch: int, periods) -> int:
    """Steps until the next epoch end, log line, checkpoint or phase change, whichever is first."""
    n = steps_per_epoch - step % steps_per_epoch
    for period in periods:
        if period:
            n = min(n, period - step % period)
    return n


def train(cfg: Config, strategy: tf.distribute.Strategy | None = None,
          datasets: tfrecord.DatasetInfo | None = None, callbacks=(), on_stall=None) -> dict:
    """Train (or resume) the run `cfg` describes; evaluate; export. Returns the final metrics.

    `strategy` and `datasets` replace the ones the config names; `callbacks` are extra Keras
    callbacks, called with logs {loss, top1, lr, img_per_sec} every `log_steps` (or sooner at a
    checkpoint or epoch end) and with val_top1/val_top5 at each epoch's end. `on_stall(message)`
    must end the process when no step completes within `cfg.train.step_timeout` (see
    `watchdog`); by default it writes the message and exits with `distribute.EXIT_PEER_LOST`.

    Raises:
      distribute.PeerLost: a multi-worker run lost a worker (see `distribute.peer_lost`).
      preemption.Preempted: a signal stopped the run after a step, which was checkpointed.
    """
    t = cfg.train
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(t.seed)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(t.precision)
    try:
        return _train(cfg, strategy, datasets, list(callbacks), on_stall or distribute.exit_now)
    finally:
        keras.config.set_dtype_policy(policy)


def _train(cfg: Config, strategy, datasets, extra_callbacks, on_stall) -> dict:
    t = cfg.train

    # 1. Strategy.
    strategy = strategy or distribute.get_strategy(t.strategy, t.num_gpus, t.tpu)
    chief = distribute.is_chief(strategy)
    model_dir = model_dir_for(cfg)
    logging.info("%s, %s", type(strategy).__name__, distribute.describe(strategy))

    # 2. Data.
    info = datasets or sources.resolve(cfg.data)
    num_classes = cfg.model.num_classes or info.num_classes
    names = tuple(info.class_names) if len(info.class_names) == num_classes else tuple(map(str, range(num_classes)))
    cfg = config.replace(cfg, model={"num_classes": num_classes, "class_names": names})
    if t.teacher:
        distill.check_teacher(t.teacher, cfg.model, info.name)

    # 3. The run directory: only for the model it holds (checked before anything is written), and
    # one trainer at a time.
    if chief:
        rundir.check_matches(cfg, model_dir)
    with rundir.lock(model_dir) if chief else contextlib.nullcontext(), preemption.SignalFlag() as signals:
        if chief:
            config.save(cfg, model_dir)
        # Steps completed, counted inside the loop and watched from another thread.
        watchdog = StepWatchdog(tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done"),
                                t.step_timeout, on_stall)
        try:
            return _run(cfg, strategy, info, model_dir, chief, signals, extra_callbacks, watchdog)
        except tf.errors.OpError as error:
            lost = distribute.peer_lost(error, strategy, model_dir)
            if lost is None:
                raise
            raise lost from None
        finally:
            watchdog.close()


def _run(cfg: Config, strategy, info, model_dir: str, chief: bool, signals, extra_callbacks, watchdog) -> dict:
    t = cfg.train
    steps_per_epoch = pipeline.steps_per_epoch(info.counts["train"], t.batch_size)
    total_steps = t.epochs * steps_per_epoch
    freeze_steps = t.freeze_backbone_epochs * steps_per_epoch
    max_bad = pipeline.max_bad_records(cfg.data, info)

    # 4. Model, optimizer and checkpoint (and the teacher: read, not trained) under the strategy's scope.
    with strategy.scope():
        model = build_train_model(cfg)
        optimizer = optim.build_optimizer(t, steps_per_epoch, weight_decay=cfg.model.weight_decay)
        optimizer.build(model.trainable_variables)
        teacher = distill.load_teacher(t.teacher) if t.teacher else None
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=global_step, rng=rng_states(model))

    # 5. Resume from the newest readable checkpoint, or initialize a new run.
    saver = CheckpointManagerCallback(checkpoint, model_dir, step=global_step, every_steps=t.checkpoint_steps,
                                      keep=t.keep_checkpoints, is_chief=chief)
    start_step = saver.restore()
    if start_step == 0:
        initialize_weights(model, cfg)
    callbacks = [saver, *extra_callbacks]
    scalars = ScalarsCallback(os.path.join(model_dir, "logs"), global_step) if chief else None
    if chief:
        callbacks += [scalars, keras.callbacks.CSVLogger(os.path.join(model_dir, "log.csv"), append=True)]
    callbacks = keras.callbacks.CallbackList(
        callbacks, add_progbar=chief, model=model, epochs=t.epochs, steps=steps_per_epoch,
        verbose=1 if sys.stdout.isatty() else 2,
    )

    # 6. The loop.
    jit = use_xla(cfg, strategy)
    eval_step = evaluate.make_eval_step(strategy, model)
    eval_data = evaluate.eval_dataset(strategy, info, cfg)
    start_epoch = start_step // steps_per_epoch
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.build_dataset(
            info, cfg.data, split="train", global_batch_size=t.batch_size, image_size=cfg.model.image_size,
            training=True, seed=t.seed, epochs=(start_epoch, t.epochs), skip_steps=start_step % steps_per_epoch,
            input_context=ctx, num_classes=cfg.model.num_classes,
        )
    )
    iterator = iter(dataset)
    step = start_step
    logging.info(
        "Training %s on %s: %d steps/epoch, %d epochs, global batch %d, %d replica(s), %s, XLA %s, "
        "starting at step %d; model_dir %s", model.name, info.name, steps_per_epoch, t.epochs, t.batch_size,
        strategy.num_replicas_in_sync, t.precision, "on" if jit else "off", step, model_dir,
    )
    callbacks.on_train_begin()
    logs, train_loop, frozen, bad_in_epoch, bad_total = {}, None, None, 0, 0
    while step < total_steps:
        if frozen != (step < freeze_steps):
            frozen = step < freeze_steps
            if freeze_steps:
                set_backbone_trainable(model, not frozen)
            # A new variable list.
            train_loop = make_train_loop(strategy, model, optimizer, cfg, jit, stop_flag=signals.flag, teacher=teacher,
                                         progress=watchdog.progress)
        epoch = step // steps_per_epoch
        if step % steps_per_epoch == 0 or step == start_step:
            callbacks.on_epoch_begin(epoch)
            bad_in_epoch = 0
        num_steps = _steps_to_next_stop(step, steps_per_epoch, (t.log_steps, t.checkpoint_steps, freeze_steps))
        started = time.perf_counter()
        with pipeline.naming_bad_records(info, "train"), watchdog.watch(step):
            out = train_loop(iterator, tf.constant(num_steps))
        loss, top1, hard, distilled = (float(v) for v in out["means"].numpy())
        elapsed = time.perf_counter() - started
        done = int(out["steps"])
        watchdog.record(elapsed / max(done, 1))
        if not (math.isfinite(loss) and bool(out["finite"])):
            raise Diverged(
                f"loss is {loss}{'' if out['finite'] else ' and weights are not finite'} in steps {step + 1}-"
                f"{step + done}: stopped; the newest checkpoint in {model_dir} (step {saver.last_saved}) is the last "
                f"good one"
            )
        step += done
        global_step.assign(step)
        bad = int(out["bad_records"])
        bad_in_epoch, bad_total = bad_in_epoch + bad, bad_total + bad
        if bad:
            logging.warning("skipped %d bad record(s) in steps %d-%d (%d this epoch, at most %d allowed)", bad,
                            step - done + 1, step, bad_in_epoch, max_bad)
            if bad_in_epoch > max_bad:
                raise pipeline.BadRecords(
                    f"{bad_in_epoch} bad records skipped in epoch {epoch + 1}, more than --max_bad_records={max_bad}: "
                    f"the data set is damaged; write its shards again (mobilenet-convert), or raise --max_bad_records"
                )
        logs = {"loss": loss, "top1": top1, "lr": float(optimizer.learning_rate),
                "img_per_sec": done * t.batch_size / elapsed}
        if cfg.data.skip_bad_records:
            logs["bad_records"] = bad_total
        if teacher is not None:  # both terms of the loss
            logs.update(loss_ce=hard, loss_distill=distilled)
        if bool(out["stopped"]):
            # Preempted: every worker stopped after this same step; save it and leave.
            callbacks.on_train_batch_end((step - 1) % steps_per_epoch, logs)
            path = saver.save()
            callbacks.on_train_end(logs)
            raise preemption.Preempted(signals.signal_name or "a signal on another worker", step, path)
        callbacks.on_train_batch_end((step - 1) % steps_per_epoch, logs)
        if t.log_steps and step % t.log_steps == 0:
            logging.info("epoch %d step %d/%d loss %.4f top1 %.4f lr %.6f %.1f img/s", epoch + 1, step, total_steps,
                         loss, top1, logs["lr"], logs["img_per_sec"])
        if step % steps_per_epoch == 0:
            with averaged_weights(model, optimizer), pipeline.naming_bad_records(info, "validation"):
                metrics, confusion = evaluate.evaluate(strategy, model, eval_data, eval_step, with_confusion=True)
            logs.update(val_top1=metrics["top1"], val_top5=metrics["top5"])
            if scalars:
                scalars.confusion_matrix(confusion, cfg.model.class_names)
            callbacks.on_epoch_end(epoch, logs)
    callbacks.on_train_end(logs)

    # 7. Final evaluation and export, with the averaged weights when the run keeps them.
    with averaged_weights(model, optimizer):
        with pipeline.naming_bad_records(info, "validation"):
            metrics = evaluate.evaluate(strategy, model, eval_data, eval_step)
        result = {"step": step, **metrics}
        logging.info("weights digest %s", weights_digest(model))
        if chief and t.export:
            result["export"] = export.export_saved_model(model, cfg, os.path.join(model_dir, "export"))
        if chief:
            rundir.write_atomic(os.path.join(model_dir, "metrics.json"), json.dumps(result))
    return result
