"""A training run's directory: atomic writes, one trainer at a time, and refusing a command that
does not match the run already there."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time

from absl import logging

from mobilenet_tf.errors import UserError

LOCK_FILE = ".lock"


class RunLocked(UserError, RuntimeError):
    """Another live process trains in this model_dir; the message names it."""


class RunMismatch(UserError, ValueError):
    """The command asks for another model than the run in its model_dir holds; the message names
    the differing fields."""


def write_atomic(path: str, content: bytes | str) -> None:
    """Write `path` through a temporary name and rename it into place: readers see the old file or
    the new one, never a part. A failed write removes the temporary file and leaves the old one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def lock(model_dir: str):
    """Hold `<model_dir>/.lock` while inside; raise RunLocked naming the holder when a live process
    has it.

    An advisory `flock`: the kernel drops it when its process ends however it ends (SIGKILL, a
    crash), so a lock file left behind never blocks a restart. Where the file system has no locks
    (some network mounts), a warning says so and the run goes on unlocked.
    """
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise RunLocked(f"--model_dir={model_dir} is in use by another mobilenet-train ({holder}); wait for it "
                            f"to end or stop it, or give another --model_dir") from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            logging.warning("%s: the file system has no locks (%s); nothing stops a second trainer here", path,
                            error.strerror)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """'host H, pid P, since T' as the holder wrote it (it may be writing it right now)."""
    for _ in range(20):
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"host {record['host']}, pid {record['pid']}, since {record['since']}"
        except (ValueError, KeyError):
            time.sleep(0.05)
    return "its host and pid are not recorded yet"


# The fields that fix the model's weights, and the flags that set them.
_MODEL_FIELDS = {"name": "--model", "alpha": "--alpha", "minimalistic": "--minimalistic", "image_size": "--image_size",
                 "num_classes": "--num_classes/--dataset", "class_names": "--dataset", "qat": "--qat",
                 "layout": "--pretrained", "depth_multiplier": "--pretrained", "variant": "--pretrained"}


# The teacher a run distills from: another one would make another run of it.
_TEACHER_FIELDS = {"teacher": "--teacher", "distill_weight": "--distill_weight",
                   "distill_temperature": "--distill_temperature"}


def check_matches(cfg, model_dir: str) -> None:
    """Raise RunMismatch when `model_dir` holds checkpoints of another model than `cfg` (a Config)
    builds, or of a run distilled from another teacher.

    Only the fields that shape the weights count (architecture, width, input size, classes) and
    the teacher's: a different --epochs or --learning_rate continues the run. A directory without
    checkpoints holds nothing to lose and takes any command.
    """
    from mobilenet_tf import config

    path = os.path.join(model_dir, config.CONFIG_FILE)
    if not os.path.isfile(path) or not any(name.endswith(".index") for name in os.listdir(model_dir)):
        return
    saved = config.load(model_dir)
    differences, what = _differences(cfg.model, saved.model, _MODEL_FIELDS), "another model"
    if not differences and (cfg.train.teacher or saved.train.teacher):  # without one, weight and temperature do nothing
        differences, what = _differences(cfg.train, saved.train, _TEACHER_FIELDS), "a run of another teacher"
    if differences:
        raise RunMismatch(f"--model_dir={model_dir} holds {what} than this command trains: {'; '.join(differences)}. "
                          f"Give the run's flags to resume it, or a new --model_dir")


def _differences(ours, theirs, fields: dict) -> list[str]:
    """"--flag value (the run: value)" for each of `fields` in which the two config sections differ."""
    return [f"{flag} {_show(getattr(ours, field))} (the run: {_show(getattr(theirs, field))})"
            for field, flag in fields.items() if getattr(ours, field) != getattr(theirs, field)]


def _show(value) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, tuple):
        return ",".join(value) if len(value) <= 12 else f"{len(value)} names ({','.join(value[:3])},...)"
    return str(value)
