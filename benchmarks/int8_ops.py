"""Why a MobileNetV3 runs slower in int8 than in float32 on LiteRT: each activation's int8 speed-up.

    nice -n 10 python3 benchmarks/int8_ops.py [--quick]

LiteRT hands each op to its XNNPACK delegate when XNNPACK has a kernel for that op and type, and
runs the rest on its own built-in kernels, splitting the delegated graph around them. This times,
at batch 1 on one thread, the same small network (a 28x28 image widened to 96 channels, then four
1x1 convolutions, each followed by the block under test) as float32 and as full-integer int8 TFLite:

- relu (the peer: V1, V2 and V4 use nothing else), hard_swish (V3's activation, TFLite's fused
  HARD_SWISH op), hard_swish_decomposed (the same function as `x * min(relu(x / 6 + 0.5), 1)`,
  elementwise int8 ops the converter leaves apart) and squeeze_excite (V3's pooling, two 1x1
  convolutions, hard-sigmoid, multiply);
- each on LiteRT as shipped (XNNPACK) and on the built-in kernels alone (no delegate), which shows
  whether XNNPACK took the op;
- then whole models at 224x224, random weights: MobileNetV3-Small and its `--minimalistic`
  variant (ReLU, no squeeze-excite, no hard-swish), the same two engines.

The int8 model of each is converted by `mobilenet_tf.tflite.convert` (calibrated on random data;
latency does not depend on the values). Prints int8 / float32 speed-ups, and last one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf import config, export, tflite  # noqa: E402
from mobilenet_tf.models.build import build_from_config  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import timed_in_turns  # noqa: E402


def block_network(block: str) -> keras.Model:
    """A 0-255 28x28 RGB image widened to 96 channels, then four 1x1 convolutions, each followed by
    `block`."""
    x = inputs = keras.Input((28, 28, 3), batch_size=1)
    x = keras.layers.Conv2D(96, 1, activation="relu")(keras.layers.Rescaling(1 / 127.5, offset=-1)(x))
    for _ in range(4):
        x = keras.layers.Conv2D(96, 1)(x)
        if block == "relu":
            x = keras.layers.ReLU()(x)
        elif block == "hard_swish":
            x = keras.layers.Activation("hard_swish")(x)
        elif block == "hard_swish_decomposed":  # a form the converter does not fuse into HARD_SWISH
            gate = keras.layers.ReLU(max_value=1.0)(keras.layers.Rescaling(1 / 6, offset=0.5)(x))
            x = keras.layers.Multiply()([x, gate])
        else:  # squeeze_excite, after a ReLU
            x = keras.layers.ReLU()(x)
            scale = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
            scale = keras.layers.Conv2D(24, 1, activation="relu")(scale)
            scale = keras.layers.Conv2D(96, 1, activation="hard_sigmoid")(scale)
            x = keras.layers.Multiply()([x, scale])
    return keras.Model(inputs, x)


def whole_model(minimalistic: bool) -> keras.Model:
    """MobileNetV3-Small 1.0 at 224x224, 1000 classes, random weights, as a 0-255 model."""
    keras.utils.set_random_seed(0)
    cfg = config.replace(config.Config(), model={
        "name": "mobilenet_v3_small", "alpha": 1.0, "minimalistic": minimalistic, "image_size": (224, 224),
        "num_classes": 1000, "class_names": tuple(f"class_{i}" for i in range(1000))})
    return export.serving_model(build_from_config(cfg.model), cfg)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute)")
    args = parser.parse_args(argv)
    rounds, block_calls = (10, 10) if args.quick else (40, 20)
    rng = np.random.default_rng(0)
    cases = {block: (block_network(block), (28, 28)) for block in ("relu", "hard_swish", "hard_swish_decomposed", "squeeze_excite")}
    cases.update({"v3_small": (whole_model(False), (224, 224)), "v3_small_minimalistic": (whole_model(True), (224, 224))})
    engines = {}
    with tempfile.TemporaryDirectory(prefix="mobilenet_tf_int8_ops_") as tmp:
        for case, (model, size) in cases.items():
            representative = rng.uniform(0, 255, (8, *size, 3)).astype(np.float32)
            flatbuffers = tflite.convert(model, size, ("float32", "int8"), representative)
            for mode, flatbuffer in flatbuffers.items():
                path = os.path.join(tmp, f"{case}_{mode}.tflite")
                with open(path, "wb") as f:
                    f.write(flatbuffer)
                for delegate in (True, False):
                    runner = tflite.LiteRTModel(path, num_threads=1, delegate=delegate)
                    tensor = runner.quantize(np.zeros((1, *size, 3), np.float32))
                    engines[(case, mode, "xnnpack" if delegate else "builtin")] = (
                        lambda runner=runner, tensor=tensor: runner.invoke(tensor))
        times = timed_in_turns(engines, rounds, block_calls)
    p50 = {key: float(np.median(seconds) * 1000) for key, seconds in times.items()}
    result = {"batch": 1, "threads": 1}
    print(f"{'p50 ms':<24}{'float32':>10}{'int8':>10}{'int8 speed-up':>15}   engine")
    for case in cases:
        result[case] = {}
        for engine in ("xnnpack", "builtin"):
            float_ms, int8_ms = p50[(case, "float32", engine)], p50[(case, "int8", engine)]
            result[case][engine] = {"float32_ms": round(float_ms, 3), "int8_ms": round(int8_ms, 3),
                                    "int8_speedup": round(float_ms / int8_ms, 2)}
            print(f"{case:<24}{float_ms:>10.3f}{int8_ms:>10.3f}{float_ms / int8_ms:>14.2f}x   {engine}")
    relu = result["relu"]["xnnpack"]["int8_speedup"]
    result["int8_speedup_vs_relu"] = {case: round(result[case]["xnnpack"]["int8_speedup"] / relu, 2)
                                      for case in ("hard_swish", "hard_swish_decomposed", "squeeze_excite")}
    print(f"int8 speed-up on XNNPACK, as a share of ReLU's ({relu:.2f}x): "
          + ", ".join(f"{case} {share:.2f}" for case, share in result["int8_speedup_vs_relu"].items()))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
