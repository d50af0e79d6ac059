"""A tf.distribute strategy from its name, and the cluster of a multi-worker run: TF_CONFIG, a
SLURM step, or a Kubernetes Indexed Job."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

import tensorflow as tf

from mobilenet_tf.config import STRATEGIES
from mobilenet_tf.errors import UserError



# sysexits.h's EX_UNAVAILABLE: a peer of a multi-worker run was lost (it died, froze, or stopped
# making progress); every worker stops with it, and the whole group must be started again.
EXIT_PEER_LOST = 69


class StrategyError(UserError, ValueError):
    """The requested strategy cannot be set up here; the message names the flag or variable."""


class PeerLost(Exception):
    """A multi-worker run lost a worker; the message names it and the checkpoint a restart of every
    worker resumes from."""


def exit_now(message: str, status: int = EXIT_PEER_LOST) -> None:
    """Write `message` as one line on stderr and end the process with `status` at once.

    For a worker whose peer is gone, or whose main thread is stuck inside TensorFlow's runtime: a
    normal exit would wait in TensorFlow's shutdown for the peer that no longer answers."""
    sys.stdout.flush()
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()
    os._exit(status)


# What TensorFlow's coordination service and collective ops report when a peer dies, freezes or
# drops its connection (UnavailableError, AbortedError and their kin carry these).
_PEER_FAILURE = re.compile(r"unhealthy|heartbeat|Collective ops is aborted|Socket closed|Connection reset|"
                           r"failed to connect|Connection refused|coordination service|Broken pipe|"
                           r"DEADLINE_EXCEEDED|Deadline Exceeded", re.IGNORECASE)
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def peer_lost(error: BaseException, strategy: tf.distribute.Strategy, model_dir: str) -> PeerLost | None:
    """The `PeerLost` that `error`, raised in a multi-worker run, means; None when it is no such error
    (or the run is not multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    workers = resolver.cluster_spec().as_dict().get("worker", []) if resolver is not None else []
    if len(workers) < 2 or not isinstance(error, tf.errors.OpError):
        return None
    text = getattr(error, "message", None) or str(error)
    if not isinstance(error, _PEER_ERRORS) and not _PEER_FAILURE.search(text):
        return None
    others = sorted({int(index) for job, index in _TASK.findall(text)
                     if job == "worker" and int(index) != resolver.task_id and int(index) < len(workers)})
    who = " and ".join(f"worker {i} ({workers[i]})" for i in others) or "a peer"
    if re.search(r"unhealthy|heartbeat", text, re.IGNORECASE):
        how = "it stopped sending heartbeats (dead or frozen)"
    elif re.search(r"Socket closed|Connection reset|Broken pipe|Connection refused|failed to connect", text,
                   re.IGNORECASE):
        how = "its connection closed"
    else:
        how = f"the all-reduce with it failed ({type(error).__name__})"
    return PeerLost(f"lost {who}: {how}; this worker stopped without writing anything more; restart every worker "
                    f"with the same command: they resume from {newest_checkpoint(model_dir)}")


def newest_checkpoint(model_dir: str) -> str:
    """The newest checkpoint `model_dir` holds, as a restart finds it (read without TensorFlow's
    state file: the name of the highest ckpt-N.index), or a sentence saying there is none."""
    steps = [int(m.group(1)) for path in glob.glob(os.path.join(model_dir, "ckpt-*.index"))
             if (m := re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(path)))]
    return os.path.join(model_dir, f"ckpt-{max(steps)}") if steps else "the start (no checkpoint yet)"


def get_strategy(name: str = "auto", num_gpus: int | None = None, tpu: str = "") -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy over all local GPUs when there are several, else one device.

    Call it before any other TensorFlow work: MultiWorkerMirroredStrategy must configure the
    collective ops at program start-up.
    """
    if name == "multi_worker":
        # Collectives over the ring, as in the Keras multi-worker guide.
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver())
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


def cluster_resolver(environ=os.environ) -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster of a multi-worker run, from the first of: TF_CONFIG; the SLURM step this process
    is a task of (`srun`); the Kubernetes Indexed Job this pod belongs to (`kubernetes_tf_config`).

    Raises:
      StrategyError: none of them describes a cluster.
    """
    if environ.get("TF_CONFIG"):
        try:
            spec = json.loads(environ["TF_CONFIG"])
        except ValueError as error:
            raise StrategyError(f"TF_CONFIG is not valid JSON ({error}); see scripts/train_multi_worker.sh") from None
        if not isinstance(spec, dict) or not spec.get("cluster"):
            raise StrategyError("TF_CONFIG has no \"cluster\"; see scripts/train_multi_worker.sh")
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "SLURM_PROCID" in environ and "SLURM_STEP_NUM_TASKS" in environ:
        return slurm_resolver(environ)
    if "JOB_COMPLETION_INDEX" in environ and "MOBILENET_TF_WORKERS" in environ:
        os.environ["TF_CONFIG"] = json.dumps(kubernetes_tf_config(environ))
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    hint = " (inside a SLURM job, start it with srun)" if "SLURM_JOB_ID" in environ else ""
    raise StrategyError(
        f"--strategy=multi_worker: no cluster is described{hint}: set TF_CONFIG (scripts/train_multi_worker.sh), "
        f"run it as a SLURM step (scripts/train_slurm.sbatch) or as a Kubernetes Indexed Job "
        f"(scripts/kubernetes/train.yaml)"
    )


def slurm_resolver(environ=os.environ) -> tf.distribute.cluster_resolver.SlurmClusterResolver:
    """TF's SlurmClusterResolver for this task of the current step (`MOBILENET_TF_PORT`: the first
    port on each node, default 8888; a node's tasks take consecutive ports).

    TF's resolver asks `nvidia-smi` for the node's GPUs unless CUDA_VISIBLE_DEVICES says, and
    divides them among the node's tasks; with no GPU it fails. CPU nodes get a nominal GPU per task
    and CUDA_VISIBLE_DEVICES is left alone.
    """
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import expand_tasks_per_node

    port = int(environ.get("MOBILENET_TF_PORT", 8888))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None and environ.get("SLURM_GPUS_ON_NODE"):
        gpus = int(environ["SLURM_GPUS_ON_NODE"])
    elif visible is None:
        gpus = None if shutil.which("nvidia-smi") else 0
    else:
        gpus = len([d for d in visible.split(",") if d.strip()])
    try:
        if gpus != 0:
            return tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port, gpus_per_node=gpus)
        tasks = max(expand_tasks_per_node(environ["SLURM_STEP_TASKS_PER_NODE"]))
        return _CpuSlurmClusterResolver(port_base=port, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
    except (KeyError, RuntimeError, ValueError) as error:
        raise StrategyError(f"--strategy=multi_worker under SLURM: {error}") from None


class _CpuSlurmClusterResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """SlurmClusterResolver on nodes without GPUs: the nominal GPU per task that makes its cluster
    arithmetic work is not reported as a device (MultiWorkerMirroredStrategy would place the
    replica on a GPU that is not there)."""

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
        return {}


def kubernetes_tf_config(environ) -> dict:
    """TF_CONFIG of this pod of a Kubernetes Indexed Job (scripts/kubernetes/train.yaml).

    Pod i of Job J runs with `subdomain: S` under a headless Service S, so it is reachable as
    `J-i.S`. From the environment: JOB_COMPLETION_INDEX (set by Kubernetes), MOBILENET_TF_WORKERS
    (the Job's completions), MOBILENET_TF_JOB (J), MOBILENET_TF_SERVICE (S), MOBILENET_TF_PORT
    (default 2222).

    Raises:
      StrategyError: a variable is missing or out of range.
    """
    try:
        index, workers = int(environ["JOB_COMPLETION_INDEX"]), int(environ["MOBILENET_TF_WORKERS"])
        job, service = environ["MOBILENET_TF_JOB"], environ["MOBILENET_TF_SERVICE"]
        port = int(environ.get("MOBILENET_TF_PORT", 2222))
    except KeyError as error:
        raise StrategyError(f"--strategy=multi_worker in a Kubernetes Job: {error.args[0]} is not set; see "
                            f"scripts/kubernetes/train.yaml") from None
    except ValueError as error:
        raise StrategyError(f"--strategy=multi_worker in a Kubernetes Job: {error}") from None
    if not 0 <= index < workers:
        raise StrategyError(f"JOB_COMPLETION_INDEX={index}: outside the MOBILENET_TF_WORKERS={workers} workers")
    hosts = [f"{job}-{i}.{service}:{port}" for i in range(workers)]
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def describe(strategy: tf.distribute.Strategy) -> str:
    """'worker 1 of 2 (host:port): devices ...' for a multi-worker strategy, else its devices."""
    devices = ", ".join(strategy.extended.worker_devices)
    resolver = getattr(strategy, "cluster_resolver", None)
    workers = resolver.cluster_spec().as_dict().get("worker", []) if resolver is not None else []
    if len(workers) < 1 or resolver.task_id is None:
        return f"devices {devices}"
    return f"worker {resolver.task_id} of {len(workers)} ({workers[resolver.task_id]}): devices {devices}"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes checkpoints, logs and exports (worker 0 of a multi-worker run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())
