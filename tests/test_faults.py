"""What clusters do to long runs, done for real: signals to live trainers, truncated checkpoints,
two trainers on one directory, a full file system, damaged shards, commands that do not match the
run, no network."""

import contextlib
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import paths
from mobilenet_tf.data import tfrecord
from mobilenet_tf.data.digits import materialize

from clis import (REPO, checkpoint_tensors, env_for, one_error_line, run, run_until, start, train_cmd,
                  wait_for)

DETERMINISTIC = ["--deterministic", "--checkpoint_steps=6", "--keep_checkpoints=3"]


def finish(model_dir, env, *flags):
    result = subprocess.run(train_cmd(model_dir, *flags), env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_weights(a, b):
    expected, actual = checkpoint_tensors(str(a)), checkpoint_tensors(str(b))
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.mark.slow  # four training runs, ~2 minutes; CI runs it
def test_sigterm_then_restart_and_a_truncated_newest_checkpoint(tmp_path, cache_dir):
    env = env_for(cache_dir)
    reference = tmp_path / "reference"
    finish(reference, env, *DETERMINISTIC)

    # SIGTERM mid-epoch (between checkpoints): the step in flight ends, is saved, exit status 75.
    preempted = tmp_path / "preempted"
    process = start(train_cmd(preempted, *DETERMINISTIC), env)
    wait_for(process, "step 20/88")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # a second signal, during the save or just after
    rest = process.stderr.read()
    process.wait()
    assert process.returncode == 75, rest[-3000:]
    assert time.monotonic() - signalled < 10
    lines = [line for line in rest.splitlines() if line.startswith("mobilenet-train: preempted by SIGTERM at step")]
    assert len(lines) == 1 and "Traceback" not in rest, rest[-3000:]
    step = int(lines[0].split("at step ")[1].split(":")[0])
    assert 20 <= step < 24 and step % 6  # stopped after the step in flight, not at a periodic checkpoint
    assert tf.train.latest_checkpoint(str(preempted)).endswith(f"ckpt-{step}")
    truncated = tmp_path / "truncated"
    shutil.copytree(preempted, truncated)

    # Restarted with the same command: continues from that step, ends bit-identical.
    resumed = finish(preempted, env, *DETERMINISTIC)
    assert f"starting at step {step}" in resumed.stderr
    assert_same_weights(reference / "ckpt-88", preempted / "ckpt-88")

    # The newest checkpoint cut in half: evaluation sets it aside and uses the one before; training
    # resumes from there and still ends bit-identical.
    data = truncated / f"ckpt-{step}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    scored = run("eval", f"--model_dir={truncated}", cache_dir=cache_dir)
    assert scored.returncode == 0, scored.stderr[-3000:]
    warnings = [line for line in scored.stderr.splitlines() if f"checkpoint ckpt-{step} is unreadable" in line]
    assert len(warnings) == 1, scored.stderr[-3000:]
    assert glob.glob(str(truncated / f"ckpt-{step}.corrupt-*.data-00000-of-00001"))
    assert not os.path.exists(data)
    previous = step - step % 6
    resumed = finish(truncated, env, *DETERMINISTIC)
    assert f"starting at step {previous}" in resumed.stderr
    assert_same_weights(reference / "ckpt-88", truncated / "ckpt-88")


def test_a_garbled_newest_checkpoint_is_set_aside(tmp_path):
    """Unit level: every kind of damage is caught before a restore, and the one before is used."""
    from mobilenet_tf import checkpoint

    variable = tf.Variable(tf.range(1000, dtype=tf.float32))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(tmp_path), max_to_keep=5)
    for number in (1, 2, 3, 4):
        manager.save(checkpoint_number=number)
    (tmp_path / "ckpt-4.index").write_bytes(b"garbage" * 10)
    data = tmp_path / "ckpt-3.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # a flipped bit: the tensor's checksum no longer matches
    data.write_bytes(bytes(raw))
    os.remove(tmp_path / "ckpt-2.data-00000-of-00001")
    assert checkpoint.newest_readable(str(tmp_path)).endswith("ckpt-1")
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")
    assert len(glob.glob(str(tmp_path / "ckpt-*.corrupt-*.index"))) == 3
    (tmp_path / "checkpoint").write_text("not a checkpoint state {{{")  # a garbled state file too
    assert checkpoint.checkpoints(str(tmp_path))[-1].endswith("ckpt-1")


@pytest.mark.slow  # three trainers, ~30 s; CI runs it
def test_second_trainer_refused_and_a_killed_trainers_lock_does_not_block(tmp_path, cache_dir):
    env = env_for(cache_dir)
    model_dir = tmp_path / "run"
    first = start(train_cmd(model_dir, "--epochs=20"), env)
    wait_for(first, "starting at step")
    began = time.monotonic()
    second = run("train", "--alpha=0.35", f"--model_dir={model_dir}", cache_dir=cache_dir)
    line = one_error_line(second, "train")
    assert time.monotonic() - began < 30
    assert "in use by another mobilenet-train" in line and f"pid {first.pid}" in line, line
    assert first.poll() is None  # the first goes on

    first.send_signal(signal.SIGKILL)  # its lock file stays behind
    first.wait()
    assert (model_dir / ".lock").exists()
    code, rest = run_until(train_cmd(model_dir, "--epochs=20"), env, "starting at step", sig=signal.SIGTERM)
    assert code == 75, rest[-3000:]


def test_a_mismatched_command_leaves_the_run_intact(tmp_path, cache_dir):
    model_dir = tmp_path / "run"
    trained = run("train", "--alpha=0.35", "--epochs=1", "--log_steps=0", f"--model_dir={model_dir}",
                  cache_dir=cache_dir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    before = {path.name: path.read_bytes() for path in model_dir.iterdir() if path.is_file()}

    other = run("train", "--alpha=0.5", "--image_size=48", "--epochs=1", f"--model_dir={model_dir}",
                cache_dir=cache_dir)
    line = one_error_line(other, "train")
    assert "--alpha 0.5 (the run: 0.35)" in line and "--image_size 48x48 (the run: 32x32)" in line, line
    assert "--model " not in line and "new --model_dir" in line
    after = {path.name: path.read_bytes() for path in model_dir.iterdir() if path.is_file()}
    assert after == before
    scored = run("eval", f"--model_dir={model_dir}", cache_dir=cache_dir)
    assert scored.returncode == 0 and json.loads(scored.stdout.splitlines()[-1])["examples"] == 360


@contextlib.contextmanager
def small_filesystem(path, megabytes):
    """A size-limited tmpfs mounted at `path` (root, where mounting is allowed); None elsewhere."""
    os.makedirs(path)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path, leave_bytes):
    """Fill the file system of `path` up to `leave_bytes` free; the filler file."""
    filler = os.path.join(path, "filler")
    stat = os.statvfs(path)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))
    return filler


def limit_file_size(megabytes):
    """preexec_fn: the kernel refuses to grow any file past `megabytes` (EFBIG, not SIGXFSZ)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (megabytes << 20, megabytes << 20))
    return apply


@pytest.mark.slow  # three training runs, an export and two conversions, ~90 s; CI runs it
def test_full_disk_during_checkpoint_export_and_conversion(tmp_path, cache_dir):
    """A real refused write: a small tmpfs filled up (or, where mounting is not allowed, a
    file-size limit the kernel enforces). Nothing earlier is lost; freed, the same command goes on."""
    root = tmp_path / "disk"
    env = env_for(cache_dir)
    with small_filesystem(root, 64) as mounted:
        model_dir = root / "run"
        first = finish(model_dir, env, "--epochs=1", "--checkpoint_steps=6")
        assert "held-out top-1" in first.stdout
        kept = checkpoint_tensors(str(model_dir / "ckpt-44"))
        cmd = train_cmd(model_dir, "--epochs=2", "--checkpoint_steps=6")
        if mounted:
            filler = fill(root, 1 << 20)  # room for logs, not for a 5 MB checkpoint
            failed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        else:
            filler = None
            failed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                                    preexec_fn=limit_file_size(2))
        line = one_error_line(failed, "train")
        assert "cannot write checkpoint ckpt-48" in line and "newest checkpoint is still ckpt-44" in line, line
        assert ("No space left on device" if mounted else "File too large") in line
        assert not glob.glob(str(model_dir / "ckpt-48*"))
        assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-44")
        for key, value in checkpoint_tensors(str(model_dir / "ckpt-44")).items():
            np.testing.assert_array_equal(value, kept[key], err_msg=key)

        if mounted:  # an export onto the full disk leaves no half-written version
            exported = run("export", f"--model_dir={model_dir}", cache_dir=cache_dir)
            line = one_error_line(exported, "export")
            assert "No space left on device" in line and str(root) in line, line
            assert sorted(os.listdir(model_dir / "export")) == ["1"]
            os.remove(filler)
        resumed = finish(model_dir, env, "--epochs=2", "--checkpoint_steps=6")
        assert "starting at step 44" in resumed.stderr

        if mounted:  # a conversion onto the full disk keeps its complete shards and resumes
            output = root / "records"
            folder = os.path.join(materialize(str(cache_dir)), "train")
            os.makedirs(output)
            filler = fill(root, 300 << 10)
            args = ["--source=folder", f"--input_dir={folder}", f"--output_dir={output}", "--train_shards=8",
                    "--validation_shards=1", "--num_workers=1"]
            failed = run("convert", *args, cache_dir=cache_dir)
            line = one_error_line(failed, "convert")
            assert "No space left on device" in line and str(output) in line, line
            written = paths.shard_files(str(output), "train")
            assert not glob.glob(str(output / "*.tmp-*"))
            os.remove(filler)
            done = run("convert", *args, cache_dir=cache_dir)
            assert done.returncode == 0, done.stderr[-3000:]
            assert len(paths.shard_files(str(output), "train")) == 8 and 0 < len(written) < 8


def damaged_copy(source, destination, *, flip=None, undecodable=None, truncate=None):
    """A copy of the records in `source` with damage: (shard, record) pairs given a flipped data
    byte (bad checksum) or an image that is not one, and a shard cut in the middle of a record."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("train", "val"))
    for shard, index in [flip] if flip else []:
        path = os.path.join(destination, shard)
        records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
        offset = sum(len(r) + 16 for r in records[:index]) + 12 + 5  # inside the record's data
        raw = bytearray(open(path, "rb").read())
        raw[offset] ^= 0xFF
        open(path, "wb").write(bytes(raw))
    for shard, index in [undecodable] if undecodable else []:
        path = os.path.join(destination, shard)
        records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
        records[index] = tfrecord.make_example(b"this is not an image", label=3, height=8, width=8, channels=3,
                                               image_format="PNG")
        tfrecord.write_shard(path, records)
    for shard, index in [truncate] if truncate else []:
        path = os.path.join(destination, shard)
        records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
        with open(path, "r+b") as f:
            f.truncate(sum(len(r) + 16 for r in records[:index]) + 10)
    return destination


@pytest.mark.slow  # four short training runs, ~75 s; CI runs it
def test_bad_records_are_named_or_skipped(tmp_path, cache_dir):
    digits = materialize(str(cache_dir))
    crc = damaged_copy(digits, tmp_path / "crc", flip=("train-00001-of-00004", 7))
    undecodable = damaged_copy(digits, tmp_path / "undecodable", undecodable=("train-00002-of-00004", 11))
    both = damaged_copy(digits, tmp_path / "both", flip=("train-00001-of-00004", 7),
                        undecodable=("train-00002-of-00004", 11), truncate=("train-00003-of-00004", 50))

    def train(dataset, *flags):
        model_dir = tmp_path / "runs" / "_".join([os.path.basename(dataset), *flags]).replace("-", "")
        return run("train", "--alpha=0.35", "--epochs=1", "--log_steps=11", f"--dataset=tfrecord:{dataset}",
                   f"--model_dir={model_dir}", *flags, cache_dir=cache_dir)

    line = one_error_line(train(crc), "train")
    assert f"{crc}/train-00001-of-00004: record 7: unreadable (corrupted record at" in line, line
    assert "--skip_bad_records" in line
    line = one_error_line(train(undecodable), "train")
    assert f"{undecodable}/train-00002-of-00004: record 11: its image does not decode" in line, line

    # Skipped: one record with a bad checksum (its shard ends there), one undecodable, one shard cut
    # short: 3 per pass over the data, counted in the log and TensorBoard.
    skipped = train(both, "--skip_bad_records", "--max_bad_records=10")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    counts = [int(line.split("skipped ")[1].split(" bad")[0]) for line in skipped.stderr.splitlines()
              if "bad record(s) in steps" in line]
    assert sum(counts) >= 3, skipped.stderr[-3000:]
    events = glob.glob(str(tmp_path / "runs" / "both_skip_bad_records_max_bad_records=10" / "logs" / "train" / "events.*"))
    values = [tf.make_ndarray(v.tensor) for path in events for e in tf.compat.v1.train.summary_iterator(path)
              for v in e.summary.value if v.tag == "bad_records"]
    assert values and values[-1] == sum(counts)
    assert "held-out top-1" in skipped.stdout

    too_many = train(both, "--skip_bad_records", "--max_bad_records=2")
    line = one_error_line(too_many, "train")
    assert "more than --max_bad_records=2" in line, line


def test_offline_pretrained_weights_fail_in_one_line(tmp_path, cache_dir):
    env = env_for(cache_dir, KERAS_HOME=str(tmp_path / "keras"), HTTPS_PROXY="http://127.0.0.1:9",
                  HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    result = run("train", "--alpha=0.35", "--pretrained=imagenet", f"--model_dir={tmp_path / 'run'}",
                 cache_dir=cache_dir, env=env)
    line = one_error_line(result, "train")
    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" \
          "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224.h5"
    assert f"cannot download {url}" in line, line
    assert "--pretrained=PATH/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224.h5" in line


def test_empty_class_folder_is_warned(tmp_path, cache_dir):
    folder = tmp_path / "photos"
    source = os.path.join(materialize(str(cache_dir)), "train")
    for label in ("0", "1"):
        shutil.copytree(os.path.join(source, label), folder / label)
    os.makedirs(folder / "2")
    result = run("convert", "--source=folder", f"--input_dir={folder}", f"--output_dir={tmp_path / 'out'}",
                 cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mobilenet-convert: warning:")]
    assert len(warnings) == 1 and "1 class folder(s) without training files: 2" in warnings[0], result.stderr
