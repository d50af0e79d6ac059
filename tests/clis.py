"""Running the commands as users run them: subprocesses, real signals, their stderr read back."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small, quick run: V2-0.35 at 32x32 on digits, 2 epochs of 44 steps, dropout on.
TINY = ["--alpha=0.35", "--epochs=2", "--batch_size=32", "--dropout=0.2", "--log_steps=4"]
COMMANDS = {"train": "mobilenet-train", "convert": "mobilenet-convert", "export": "mobilenet-export",
            "eval": "mobilenet-eval", "predict": "mobilenet-predict", "demo": "mobilenet-demo"}


def env_for(cache_dir=None, **extra):
    """The environment of a command: this checkout on PYTHONPATH, the digits cached in `cache_dir`."""
    cache = {"MOBILENET_TF_CACHE": str(cache_dir)} if cache_dir else {}
    return dict(os.environ, PYTHONPATH=REPO, **cache, **extra)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(command, *args):
    """The argv of `python -m mobilenet_tf.cli.<command> ARGS` (= `mobilenet-<command> ARGS`)."""
    return [sys.executable, "-m", f"mobilenet_tf.cli.{command}", *map(str, args)]


# TensorFlow's and LiteRT's start-up chatter (see mobilenet_tf/chatter.py): never on a command's stderr.
CHATTER = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on", "cudart_stub.cc",
           "cuInit", "cpu_feature_guard", "rebuild TensorFlow with the appropriate compiler flags",
           "Created TensorFlow Lite XNNPACK delegate", "fully_quantize:")


def chatter_in(stderr: str) -> list[str]:
    """The lines of `stderr` that hold any of TensorFlow's start-up chatter."""
    return [line for line in stderr.splitlines() if any(pattern in line for pattern in CHATTER)]


def run(command, *args, cache_dir=None, timeout=900, env=None):
    """Run `mobilenet-<command> ARGS` to its end; the CompletedProcess (text stdout and stderr). Every
    command of the suite is checked to start quiet: no line of TensorFlow's chatter on its stderr."""
    result = subprocess.run(cli(command, *args), capture_output=True, text=True, cwd=REPO, timeout=timeout,
                            env=env or env_for(cache_dir))
    if "--verbosity=1" not in args:
        assert not chatter_in(result.stderr), chatter_in(result.stderr)
    return result


def runnable_blocks(page):
    """The ```sh runnable blocks of `page` (a path under the repository), in order."""
    with open(os.path.join(REPO, page)) as f:
        return re.findall(r"```sh runnable\n(.*?)```", f.read(), re.S)


def train_cmd(model_dir, *flags):
    return cli("train", *TINY, f"--model_dir={model_dir}", *flags)


def one_error_line(result, command):
    """The single `<command>: error: ...` line of a failed run (exit status 1, no traceback)."""
    name = COMMANDS.get(command, command)
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "{{node" not in result.stderr
    return errors[0]


def checkpoint_tensors(path):
    """Every tensor of a checkpoint but the save counter (which counts saves, not training)."""
    reader = tf.train.load_checkpoint(path)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if "save_counter" not in key and key != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def start(cmd, env):
    """A process with stderr piped as text (stdout discarded)."""
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(process, pattern, timeout=600):
    """Read the process' stderr until a line contains `pattern`; the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in process.stderr:
        lines.append(line)
        if pattern in line or time.monotonic() > deadline:
            break
    assert any(pattern in line for line in lines), "".join(lines[-30:])
    return lines


def run_until(cmd, env, pattern, extra_delay=0.0, sig=signal.SIGKILL):
    """Start `cmd`, send `sig` once `pattern` appears on stderr (plus `extra_delay` seconds); the
    exit status and the rest of stderr."""
    process = start(cmd, env)
    wait_for(process, pattern)
    time.sleep(extra_delay)
    process.send_signal(sig)
    rest = process.stderr.read()
    process.wait()
    return process.returncode, rest
