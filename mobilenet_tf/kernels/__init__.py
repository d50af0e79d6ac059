"""Native CPU kernels for the training step: the depthwise convolution's gradients and hard-swish.

On a CPU, TensorFlow runs oneDNN's depthwise backward kernels, which took 2.4-2.8x PyTorch's time
for the same work in the profile of V3-Small's and V4-Conv-S's steps, and computes hard-swish as
four elementwise ops forward and about five backward (docs/performance.md). `ops.cc` computes the
depthwise gradients with the channels in vector registers, and hard-swish in one pass each way.

It is compiled on first use, as PyTorch's `cpp_extension.load` does: with the machine's C++
compiler (`$CXX`, else g++), TensorFlow's own headers (`tf.sysconfig`) and `-march=native`, into
`$MOBILENET_TF_KERNELS_DIR` (default: `kernels` in the cache directory, `$MOBILENET_TF_CACHE` or
~/.cache/mobilenet_tf), under a name keyed by the TensorFlow version, the compiler, its flags, the
CPU and the source, so a new TensorFlow, another CPU or a changed kernel compiles anew. About 15
seconds, once per machine; nothing is downloaded, no package is added.

Where the kernels cannot be used, training runs TensorFlow's own ops, with the same results within
float rounding: no compiler, a failed compile or a build that does not load (one line on stderr
says so, once), `MOBILENET_TF_NATIVE_KERNELS=0`, an accelerator or XLA (the training step does not
enter `native_ops()` there), float64 or bfloat16 tensors, and depthwise convolutions the kernels
do not cover (`depthwise_geometry`).

Only the training step's graph holds them: inside `native_ops()`, the depthwise gradients that
`tape.gradient` builds, and the forward and backward of the hard-swish layers `prepare` set up.
Evaluation, every export and saved models trace the model outside the scope and keep TensorFlow's
ops (the TFLite converter's HARD_SWISH fusion among them).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

import keras
import tensorflow as tf

from mobilenet_tf.config import default_cache_dir
from mobilenet_tf.models.layers import thread_scope

_SOURCE = os.path.join(os.path.dirname(__file__), "ops.cc")
_FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-Wno-deprecated-declarations")
SWITCH = "MOBILENET_TF_NATIVE_KERNELS"
_KERNELS = (3, 5, 7)

# Whether the thread tracing a step is inside `native_ops()`.
_SCOPE = threading.local()
_INSTALL_LOCK = threading.Lock()


def _fall_back(reason: str) -> None:
    """The one line on stderr that says why training runs TensorFlow's ops instead of the kernels."""
    sys.stderr.write(f"mobilenet_tf: {reason}: training uses TensorFlow's ops, slower on a CPU "
                     f"({SWITCH}=0 silences this)\n")
    sys.stderr.flush()


@functools.lru_cache(maxsize=None)
def library():
    """The loaded kernel library (its ops as attributes), compiled first if this machine has no
    build of it yet; None where it cannot be had (the reason said once on stderr) or is switched
    off."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        _fall_back(f"no C++ compiler ({compiler}) to build the native training kernels (install g++ or set CXX)")
        return None
    flags = [*_FLAGS, *tf.sysconfig.get_compile_flags()]
    with open(_SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join([compiler, *flags, _cpu()]).encode()).hexdigest()[:16]
    folder = os.environ.get("MOBILENET_TF_KERNELS_DIR") or os.path.join(default_cache_dir(), "kernels")
    target = os.path.join(folder, f"ops-tf{tf.__version__}-{key}.so")
    if not os.path.isfile(target):
        try:
            _compile(compiler, flags, target)
        except (OSError, subprocess.CalledProcessError) as error:
            stderr = (getattr(error, "stderr", None) or "").splitlines()
            reason = next((line.strip() for line in stderr if "error" in line), None) or (
                f"{compiler} exited with status {error.returncode}" if isinstance(error, subprocess.CalledProcessError)
                else str(error))
            _fall_back(f"the native training kernels did not compile ({reason})")
            return None
    try:
        return tf.load_op_library(target)
    except tf.errors.OpError as error:
        _fall_back(f"the native training kernels in {target} did not load ({error.message.splitlines()[0]}; "
                   f"delete that file to build them again)")
        return None


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (Linux), so that machines
    sharing one cache folder (a cluster's home directory) each build their own."""
    try:
        with open("/proc/cpuinfo") as f:
            return " ".join(sorted({line.strip() for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.machine() + platform.processor()


def _compile(compiler: str, flags: list[str], target: str) -> None:
    """Compiles into a temporary file beside `target`, then renames it: processes compiling at once
    (the workers of one machine) each leave a whole library or none."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=os.path.dirname(target))
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, _SOURCE, "-o", partial, *tf.sysconfig.get_link_flags()],
                       check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _active():
    """The library when this thread is inside `native_ops()`, else None."""
    return library() if getattr(_SCOPE, "active", False) else None


def native_ops():
    """Inside, in this thread, the hard-swish layers `prepare` set up run the native kernels, and
    the gradients of depthwise convolutions that `tape.gradient` builds are the native kernels'
    where they cover the convolution (a no-op without the library)."""
    lib = library()
    if lib is None:
        return contextlib.nullcontext()
    _install_depthwise_gradient(lib)
    return thread_scope(_SCOPE)


def prepare(model: keras.Model) -> None:
    """Lets the model's hard-swish Activation layers run the native kernels inside `native_ops()`.
    Outside it they call Keras' hard-swish as before; their config (and so a saved model) is
    unchanged."""
    for layer in model.layers:
        if (isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.hard_swish
                and "call" not in vars(layer)):
            layer.call = functools.partial(_hard_swish_call, layer.call)


def _hard_swish_call(call, inputs):
    lib = _active()
    if lib is None or inputs.dtype != tf.float32:
        return call(inputs)

    @tf.custom_gradient
    def hard_swish(x):
        return lib.mobilenet_hard_swish(x), lambda grad: lib.mobilenet_hard_swish_grad(x, grad)

    return hard_swish(inputs)


def _install_depthwise_gradient(lib) -> None:
    """Puts `_depthwise_gradient` in front of TensorFlow's registered gradient of
    DepthwiseConv2dNative (once per process). TensorFlow has no public way to override a registered
    gradient for the tape, so this replaces the registry's entry; `_depthwise_gradient` hands every
    convolution outside the scope, or not covered, to the function it replaced."""
    from tensorflow.python.framework import ops

    with _INSTALL_LOCK:
        entry = ops._gradient_registry._registry["DepthwiseConv2dNative"]
        if not isinstance(entry["type"], functools.partial):
            entry["type"] = functools.partial(_depthwise_gradient, entry["type"])


def depthwise_geometry(x, kernel, attr) -> tuple[int, int, int] | None:
    """(stride, pad_top, pad_left) when the native kernels compute the gradients of this depthwise
    convolution (`x` and `kernel` its inputs, `attr` its attribute getter), else None: float32
    NHWC, a channel multiplier of 1, a square 3x3, 5x5 or 7x7 kernel, stride 1 or 2, no dilation,
    static height and width."""
    strides = list(attr("strides"))
    padding = attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    data_format = attr("data_format")
    if (x.dtype != tf.float32 or data_format not in (b"NHWC", "NHWC") or list(attr("dilations")) != [1, 1, 1, 1]
            or padding not in ("SAME", "VALID") or strides[0] != 1 or strides[3] != 1
            or strides[1] != strides[2] or strides[1] not in (1, 2)):
        return None
    k_h, k_w, _, multiplier = kernel.shape
    height, width = x.shape[1:3]
    if k_h != k_w or k_h not in _KERNELS or multiplier != 1 or height is None or width is None:
        return None
    stride = strides[1]
    if padding == "VALID":
        return stride, 0, 0
    # TensorFlow's SAME: the output is ceil(in / stride), the odd pixel of padding at the end.
    pads = [max((-(-size // stride) - 1) * stride + k_h - size, 0) for size in (height, width)]
    return stride, pads[0] // 2, pads[1] // 2


def _depthwise_gradient(fallback, op, grad):
    lib = _active()
    geometry = None if lib is None else depthwise_geometry(op.inputs[0], op.inputs[1], op.get_attr)
    if geometry is None:
        return fallback(op, grad)
    stride, pad_top, pad_left = geometry
    x, kernel = op.inputs
    return [lib.mobilenet_depthwise_grad_input(grad, kernel, tf.shape(x), stride=stride, pad_top=pad_top,
                                               pad_left=pad_left),
            lib.mobilenet_depthwise_grad_filter(x, grad, kernel=kernel.shape[0], stride=stride, pad_top=pad_top,
                                                pad_left=pad_left)]
