"""TensorFlow's and LiteRT's C++ chatter on file descriptor 2, kept off the terminal.

TensorFlow's C++ logging before absl::InitializeLog() runs ignores TF_CPP_MIN_LOG_LEVEL and writes
its start-up lines to file descriptor 2 while TensorFlow loads and finds its devices: on a CPU
machine the absl preamble, oneDNN's notice, the CPU feature guard (two lines), the CUDA stub and
cuInit's failure, twice over for the two shared libraries. LiteRT writes "INFO: Created TensorFlow
Lite XNNPACK delegate for CPU." when its first interpreter is set up, with no setting to stop it,
and the TFLite converter prints its quantizer's settings ("fully_quantize: 0, inference_type: ...").
Inside `filtered`, INFO and WARNING lines are dropped, and the errors that are not: CUDA's on a
machine without an NVIDIA device, the "Unable to register cuDNN/cuFFT/cuBLAS factory" that
TensorFlow's GPU builds print everywhere. Any other line passes, a C++ error in one line after the
name of its source. TF_CPP_MIN_LOG_LEVEL=0 (what `--verbosity=1` sets) lets everything through.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import threading

# absl's C++ log line: severity, date, time, thread, file:line] message.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (.*)$")
# TFLite's minimal logger: "INFO: ...", "WARNING: ...", "ERROR: ...".
_LITE_LINE = re.compile(r"^(INFO|WARNING|ERROR): (.*)$")
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$"),
    # The TFLite converter's quantizer prints its settings to std::cerr.
    re.compile(r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$"),
)
_FACTORIES = re.compile(r"Unable to register \w+ factory")
_CUDA_WITHOUT_GPU = re.compile(r"failed call to cuInit|Could not find cuda drivers")


def shown() -> bool:
    """Whether the user asked for TensorFlow's own lines (TF_CPP_MIN_LOG_LEVEL=0)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


def kept(line: str, source: str) -> str | None:
    """What of a line reaches the user: None for chatter, `<source>: <message>` for a C++ error, other
    lines as they are."""
    if any(pattern.match(line) for pattern in _NOISE):
        return None
    match = _LOG_LINE.match(line) or _LITE_LINE.match(line)
    if not match:
        return line
    severity, message = match.groups()
    if severity[0] in "IW" or _FACTORIES.search(message):
        return None
    if _CUDA_WITHOUT_GPU.search(message) and not glob.glob("/dev/nvidia[0-9]*"):
        return None
    return f"{source}: {message}"


@contextlib.contextmanager
def filtered(source: str):
    """Inside, whatever is written to file descriptor 2 (by C++ or Python) goes through `kept`, line
    by line as it comes (a crash inside still shows what came before it); `source` ("mobilenet-eval:
    TensorFlow", "LiteRT") opens the lines it rewrites. A no-op when `shown()`."""
    if shown():
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                line = kept(raw.decode(errors="replace").rstrip("\r\n"), source)
                if line is not None:
                    os.write(terminal, f"{line}\n".encode())

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end: the thread reads to its end
        thread.join(timeout=10)
        os.close(terminal)
