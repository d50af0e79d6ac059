"""Thin absl apps, one per command: parse flags, build the config, call the library."""

from __future__ import annotations

import os
import sys


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the terminal unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(command: str, message: str) -> None:
    """End the program with one line on stderr and exit status 1."""
    sys.stderr.write(f"{command}: error: {message}\n")
    sys.exit(1)
