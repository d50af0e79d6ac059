"""Multi-worker runs that lose a worker, with real processes on loopback: SIGKILL of a worker, SIGKILL
of the chief, SIGSTOP of a worker, and a worker whose input blocks (a shard that is a FIFO with no
writer). Every survivor stops in one line naming the lost worker, with the status of a lost peer
and no traceback, writing nothing more; restarted together, the workers resume and end
bit-identical to a run never interrupted."""

import json
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest

from mobilenet_tf import distribute
from mobilenet_tf.data.digits import materialize

from clis import checkpoint_tensors, chatter_in, env_for, free_port, start, train_cmd, wait_for

FLAGS = ["--strategy=multi_worker", "--deterministic", "--checkpoint_steps=6"]
# The coordination service's heartbeat timeout is 10 s; a frozen peer was seen to take 26 s on a
# loaded machine; a dead one a few seconds.
BOUND_SECONDS = 45


def workers(model_dir, cache_dir, *flags):
    """Two workers of one run on loopback ports (fresh ones at each start)."""
    hosts = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = env_for(cache_dir, TF_CONFIG=json.dumps(tf_config))
        processes.append(start(train_cmd(model_dir, *FLAGS, *flags), env))
    return processes, hosts


def newest_step(model_dir):
    return max(int(m.group(1)) for name in os.listdir(model_dir) if (m := re.fullmatch(r"ckpt-(\d+)\.index", name)))


def checkpoints(model_dir):
    return sorted(name for name in os.listdir(model_dir) if name.endswith(".index"))


def lose(model_dir, cache_dir, at_step, victim, how):
    """Start both workers, wait for `at_step`, then `how` (a signal) to worker `victim`; the survivor's
    exit status, stderr, seconds from the signal to its exit, the cluster, and the checkpoints there
    were when the signal went."""
    processes, hosts = workers(model_dir, cache_dir)
    for process in processes:
        wait_for(process, f"step {at_step}/88")
    processes[victim].send_signal(how)
    lost_at, written = time.monotonic(), checkpoints(model_dir)
    survivor = processes[1 - victim]
    _, stderr = survivor.communicate(timeout=300)
    seconds = time.monotonic() - lost_at
    processes[victim].kill()  # the frozen one too
    processes[victim].wait()
    return survivor.returncode, stderr, seconds, hosts, written


@pytest.mark.alone  # two workers of its own; seconds to the survivor's exit asserted
@pytest.mark.slow  # six two-worker starts, ~5 minutes on 2 cores; CI runs it
def test_lost_workers_stop_the_group_in_one_line_and_a_restart_resumes_bit_identical(tmp_path, cache_dir):
    reference = tmp_path / "reference"
    processes, _ = workers(reference, cache_dir)
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    run = tmp_path / "run"
    # A killed worker's closed sockets are usually seen first, its missing heartbeats sometimes.
    dead, frozen = ("its connection closed", "it stopped sending heartbeats"), ("it stopped sending heartbeats",)
    for at_step, victim, how, reasons in ((20, 1, signal.SIGKILL, dead), (40, 0, signal.SIGKILL, dead),
                                          (60, 1, signal.SIGSTOP, frozen)):
        status, stderr, seconds, hosts, written = lose(run, cache_dir, at_step, victim, how)
        assert status == distribute.EXIT_PEER_LOST, stderr[-3000:]
        assert seconds < BOUND_SECONDS, seconds
        ours = [line for line in stderr.splitlines() if line.startswith("mobilenet-train:")]
        assert len(ours) == 1, stderr[-3000:]
        assert "Traceback" not in stderr and "{{node" not in stderr and not chatter_in(stderr)
        checkpoint = run / f"ckpt-{newest_step(run)}"
        # The lost worker named, with its address, and where a restart of both resumes. Nothing was
        # written after the loss.
        assert ours[0].startswith(f"mobilenet-train: lost worker {victim} ({hosts[victim]})"), ours[0]
        assert any(reason in ours[0] for reason in reasons) and ours[0].endswith(f"they resume from {checkpoint}"), ours[0]
        assert checkpoints(run) == written and at_step - 6 <= newest_step(run) <= at_step + 6

    resume_at = newest_step(run)
    processes, _ = workers(run, cache_dir)
    for index, process in enumerate(processes):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        assert index or f"starting at step {resume_at}" in stderr  # the chief says so
    expected, actual = checkpoint_tensors(str(reference / "ckpt-88")), checkpoint_tensors(str(run / "ckpt-88"))
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.mark.slow  # two workers for ~1 minute; CI runs it
def test_a_stuck_input_stops_every_worker_after_the_step_timeout(tmp_path, cache_dir):
    """Worker 1's second shard is a FIFO nobody writes: its input blocks, its heartbeats go on, and
    worker 0 waits in the all-reduce. Both stop after --step_timeout without progress, in one line."""
    data = tmp_path / "records"
    shutil.copytree(materialize(str(cache_dir)), data, ignore=shutil.ignore_patterns("train", "val"))
    os.remove(data / "train-00003-of-00004")  # worker 1 reads shards 1 and 3
    os.mkfifo(data / "train-00003-of-00004")
    started = time.monotonic()
    processes, _ = workers(tmp_path / "run", cache_dir, f"--dataset=tfrecord:{data}", "--step_timeout=30")
    for index, process in enumerate(processes):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == distribute.EXIT_PEER_LOST, stderr[-3000:]
        ours = [line for line in stderr.splitlines() if line.startswith("mobilenet-train:")]
        assert len(ours) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert re.match(r"mobilenet-train: no training step completed for 3\d s after step \d+ \(the limit: 30 s, "
                        r"--step_timeout\): this worker's input, or a peer, is stuck; restart every worker", ours[0])
    assert time.monotonic() - started < 200
