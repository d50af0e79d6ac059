"""A tf.distribute strategy from its name."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from mobilenet_tf.errors import UserError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


class StrategyError(UserError, ValueError):
    """The requested strategy cannot be set up here; the message names the flag or variable."""


def get_strategy(name: str = "auto", num_gpus: int | None = None, tpu: str = "") -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy over all local GPUs when there are several, else one device.

    Call it before any other TensorFlow work: MultiWorkerMirroredStrategy must configure the
    collective ops at program start-up.
    """
    if name == "multi_worker":
        try:
            json.loads(os.environ.get("TF_CONFIG") or "{}")
        except ValueError as error:
            raise StrategyError(f"TF_CONFIG is not valid JSON ({error}); see scripts/train_multi_worker.sh") from None
        # Cluster from TF_CONFIG; collectives over the ring, as in the Keras multi-worker guide.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StrategyError(
                f"--strategy=tpu: no TPU reachable with --tpu={tpu!r} ({detail}); give --tpu=NAME, "
                "--tpu=grpc://HOST:8470, or --tpu=local on a TPU VM"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if num_gpus is not None:
        gpus = gpus[:num_gpus]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy([d.name for d in gpus] or None)
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes checkpoints, logs and exports (worker 0 of a multi-worker run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())
