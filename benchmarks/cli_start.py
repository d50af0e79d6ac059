"""How fast each command answers --helpshort and a bad flag, against importing TensorFlow.

    nice -n 10 python3 benchmarks/cli_start.py [--quick]

Each command (`python -m mobilenet_tf.cli.<name>`) is run with --helpshort and with a flag that does
not parse, and timed wall-clock from start to exit; the peer is `python -c "import tensorflow,
keras"`, what every command paid before it could answer anything (TensorFlow was imported before
the flags were parsed). Runs are interleaved, and the median of each is reported. The last line is
JSON: per command the median seconds of both answers, the peer's, and peer / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("train", "export", "eval", "predict", "demo", "convert")
BAD_FLAG = "--no_such_flag"


def seconds(argv) -> float:
    env = dict(os.environ, PYTHONPATH=REPO)
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 10
    runs = {"import tensorflow, keras": [sys.executable, "-c", "import tensorflow, keras"]}
    for command in COMMANDS:
        for answer, flag in (("help", "--helpshort"), ("bad_flag", BAD_FLAG)):
            runs[f"{command} {answer}"] = [sys.executable, "-m", f"mobilenet_tf.cli.{command}", flag]
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(seconds(run))
    median = {name: statistics.median(values) for name, values in times.items()}
    peer = median["import tensorflow, keras"]
    result = {"rounds": rounds, "peer_import_tensorflow_s": round(peer, 3), "commands": {}}
    print(f"{'':22} {'seconds':>8} {'x faster than the import':>25}")
    for name, value in median.items():
        print(f"{name:22} {value:8.3f} {peer / value:25.1f}")
        if name != "import tensorflow, keras":
            command, answer = name.split()
            result["commands"].setdefault(command, {})[answer] = {"s": round(value, 3), "vs_import": round(peer / value, 1)}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
