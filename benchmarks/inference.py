"""Batch-1 CPU inference latency on one thread, the MobileNet family at width 1.0 and 224x224 (1000
classes; by default V2 and V3-Large/Small, `--models` takes any of V1-V4), in every form we export:

- keras:            the exported (0-255 input) Keras model called through a tf.function;
- saved_model_jpeg: the SavedModel's `serving_default` on one JPEG's bytes (decode, crop, resize
                    and model: what TF Serving runs per request, minus the RPC);
- tflite_float32:   the stock converter's float32 model on LiteRT (XNNPACK);
- tflite_int8:      the stock converter's full-integer model (uint8 in, float32 out) on LiteRT,
                    calibrated (post-training quantization);
- tflite_int8_qat:  the full-integer model of the quantization-aware twin (models/quantize.py),
                    converted from its own ranges with no calibration;
- onnx_ours:        our ONNX export (`mobilenet-export --onnx`, opset 17) on ONNX Runtime (CPU);
- onnx_keras:       the peer: keras.applications.MobileNet (V2, V3Large/Small) exported by
                    Keras's own `model.export(format="onnx")`, on ONNX Runtime (V4: none, Keras
                    has no V4);
- onnx_*_b32:       both ONNX models on a batch of 32 with ONNX Runtime on all cores (per-image ms).

    nice -n 10 python benchmarks/inference.py [--quick] [--models=mobilenet_v2,mobilenet_v3_large,...]

Weights are random (latency does not depend on them); int8 is calibrated on synthetic images and
the QAT twin's ranges come from a few training-mode passes over them.
The engines of all models are timed in turns, a block of back-to-back calls each per round, so
load from other processes falls on all of them alike. Prints a table and, last, one JSON line with
p50/p90 in ms, both int8 models' speed-up over float32 TFLite, our ONNX against Keras's, each
other model's TFLite latency as a multiple of V2's (V2 ms / its ms), and params and MACs. `--quick` (fewer rounds, fewer
calibration images) takes about a minute a model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# One thread, set before TensorFlow runs its first op.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from mobilenet_tf import config, export, onnx_export, tflite  # noqa: E402
from mobilenet_tf.models.build import build_from_config, copy_weights, count_macs  # noqa: E402

IMAGE_SIZE = (224, 224)
BLOCK = 10


def synthetic_photo(rng, height, width) -> np.ndarray:
    """uint8 RGB with smooth structure and noise, so JPEG sizes and decode times are photo-like."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(6 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(9 * x * y)], axis=-1)
    image = 127.5 + 90 * base + rng.normal(0, 20, [height, width, 3])
    return np.clip(image, 0, 255).astype(np.uint8)


def percentiles(seconds) -> dict:
    p50, p90 = np.percentile(np.asarray(seconds) * 1000, [50, 90])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3)}


def timed_in_turns(engines: dict, rounds: int, block: int, warmup: int = 1) -> dict:
    """Seconds of each timed call of each engine (a no-argument callable): `warmup` untimed calls
    each, then `rounds` rounds in which every engine in turn makes `block` + 1 back-to-back calls,
    the first untimed (it finds the caches full of the other engines' weights), so that whatever
    load the machine carries falls on all engines alike."""
    times = {key: [] for key in engines}
    for run in engines.values():
        for _ in range(warmup):
            run()
    for _ in range(rounds):
        for key, run in engines.items():
            for i in range(block + 1):
                start = time.perf_counter()
                run()
                if i:
                    times[key].append(time.perf_counter() - start)
    return times


PEERS = {"mobilenet_v1": keras.applications.MobileNet, "mobilenet_v2": keras.applications.MobileNetV2,
         "mobilenet_v3_large": keras.applications.MobileNetV3Large,
         "mobilenet_v3_small": keras.applications.MobileNetV3Small}
SHORT = {"mobilenet_v1": "v1", "mobilenet_v2": "v2", "mobilenet_v3_large": "v3_large", "mobilenet_v3_small": "v3_small",
         "mobilenet_v4_conv_small": "v4_conv_s", "mobilenet_v4_conv_medium": "v4_conv_m",
         "mobilenet_v4_conv_large": "v4_conv_l", "mobilenet_v4_hybrid_medium": "v4_hybrid_m",
         "mobilenet_v4_hybrid_large": "v4_hybrid_l"}


def prepare(name: str, tmp: str, rng, calibration: int):
    """({engine: one call}, {file: MB, params, MACs}) of model `name` at width 1.0, random weights."""
    keras.utils.set_random_seed(0)
    cfg = config.replace(
        config.Config(),
        model={"name": name, "alpha": 1.0, "image_size": IMAGE_SIZE, "num_classes": 1000,
               "class_names": tuple(f"class_{i}" for i in range(1000))},
        data={"eval_crop_fraction": 0.875},
    )
    model = build_from_config(cfg.model)
    sizes = {"params": model.count_params(), "macs": count_macs(model)}
    serving = export.serving_model(model, cfg)
    pixels = synthetic_photo(rng, *IMAGE_SIZE).astype(np.float32)[None]
    jpeg = tf.io.encode_jpeg(synthetic_photo(rng, 256, 256), quality=90).numpy()
    tmp = os.path.join(tmp, name)
    keras_fn = tf.function(lambda x: serving(x, training=False))
    saved = tf.saved_model.load(export.export_saved_model(model, cfg, tmp))
    serve = saved.signatures["serving_default"]
    representative = np.stack([synthetic_photo(rng, *IMAGE_SIZE) for _ in range(calibration)]).astype(np.float32)
    flatbuffers = tflite.convert(serving, IMAGE_SIZE, ("float32", "int8"), representative)
    qat_cfg = config.replace(cfg, model={"qat": True})
    twin = build_from_config(qat_cfg.model)
    copy_weights(model, twin)
    for batch in np.array_split(representative / 127.5 - 1.0, 4):  # learn activation ranges
        twin(batch, training=True)
    flatbuffers["int8_qat"] = tflite.convert(export.serving_model(twin, qat_cfg), IMAGE_SIZE, ["int8"],
                                             quantized=True)["int8"]
    runners = {}
    for mode, flatbuffer in flatbuffers.items():
        path = os.path.join(tmp, f"model_{mode}.tflite")
        with open(path, "wb") as f:
            f.write(flatbuffer)
        sizes[f"tflite_{mode}"] = round(len(flatbuffer) / 1e6, 2)
        runner = tflite.LiteRTModel(path, num_threads=1)
        # Apps hand the interpreter a ready tensor: quantizing the input is not timed.
        tensor = runner.quantize(pixels)
        runners[mode] = lambda runner=runner, tensor=tensor: runner.invoke(tensor)

    ort = {}
    for source, model_to_export in (("ours", serving), ("keras", None))[:2 if name in PEERS else 1]:
        path = os.path.join(tmp, f"{source}.onnx")
        if model_to_export is not None:
            with open(path, "wb") as f:
                f.write(onnx_export.convert(model_to_export, IMAGE_SIZE).SerializeToString())
        else:  # keras.applications' model as published (V2 takes [-1, 1], V3 rescales 0-255 inside as ours)
            peer = PEERS[name](weights=None, input_shape=(*IMAGE_SIZE, 3))
            peer(pixels / 127.5 - 1.0)  # Keras exports only a model that has been called
            peer.export(path, format="onnx", verbose=False)
        sizes[f"onnx_{source}"] = round(os.path.getsize(path) / 1e6, 2)
        ort[source] = (onnx_export.OnnxModel(path, num_threads=1), onnx_export.OnnxModel(path))
    batch32 = np.repeat(pixels, 32, axis=0)
    pixels_tensor, jpeg_tensor = tf.constant(pixels), tf.constant([jpeg])
    engines = {
        "keras": lambda: keras_fn(pixels_tensor).numpy(),
        "saved_model_jpeg": lambda: serve(images=jpeg_tensor)["probabilities"].numpy(),
        "tflite_float32": runners["float32"],
        "tflite_int8": runners["int8"],
        "tflite_int8_qat": runners["int8_qat"],
        "onnx_ours": lambda: ort["ours"][0](pixels),
        "onnx_ours_b32": lambda: ort["ours"][1](batch32),
    }
    if "keras" in ort:
        engines.update(onnx_keras=lambda: ort["keras"][0](pixels), onnx_keras_b32=lambda: ort["keras"][1](batch32))
    return engines, sizes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calibration images (< 60 s a model)")
    parser.add_argument("--models", default="mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small",
                        help="comma-separated architectures, each at width 1.0")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    rounds, warmup, calibration = (40, 5, 8) if args.quick else (300, 20, 64)
    started = time.perf_counter()
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory(prefix="mobilenet_tf_bench_") as tmp:
        engines, sizes = {}, {}
        for name in names:
            prepared_engines, sizes[name] = prepare(name, tmp, rng, calibration)
            engines.update({(name, engine): run for engine, run in prepared_engines.items()})
        prepared = time.perf_counter() - started
        times = timed_in_turns(engines, rounds // BLOCK, BLOCK, warmup)

    result = {"batch": 1, "threads": 1, "calls": rounds - rounds % BLOCK}
    for name in names:
        model = {}
        for (owner, engine), seconds in times.items():
            if owner == name:  # batch 32: per image
                model[engine] = percentiles([t / 32 for t in seconds] if engine.endswith("_b32") else seconds)
        if name in PEERS:
            model["onnx_ours_vs_keras_export"] = {
                batch: round(model[f"onnx_keras{batch}"]["p50_ms"] / model[f"onnx_ours{batch}"]["p50_ms"], 2)
                for batch in ("", "_b32")}
        for mode in ("int8", "int8_qat"):
            model[f"{mode}_vs_float32_tflite_speedup"] = {
                key: round(model["tflite_float32"][key] / model[f"tflite_{mode}"][key], 2) for key in ("p50_ms", "p90_ms")
            }
        model["mb"] = dict(sizes[name])
        model["params"], model["macs"] = model["mb"].pop("params"), model["mb"].pop("macs")
        result[f"{name}_1.00_224"] = model
    if "mobilenet_v2" in names:
        result["vs_v2_tflite_p50"] = {
            f"{SHORT[name]}_{mode}": round(result["mobilenet_v2_1.00_224"][f"tflite_{mode}"]["p50_ms"]
                                           / result[f"{name}_1.00_224"][f"tflite_{mode}"]["p50_ms"], 2)
            for name in names if name != "mobilenet_v2" for mode in ("float32", "int8", "int8_qat")}
    result["seconds"] = {"prepare": round(prepared, 1), "total": round(time.perf_counter() - started, 1)}

    engine_names = list(dict.fromkeys(engine for _, engine in engines))
    print(f"{'p50 ms (p90)':<18}" + "".join(f"{SHORT.get(name, name):>18}" for name in names))
    for engine in engine_names:
        cells = [result[f"{name}_1.00_224"].get(engine) for name in names]
        print(f"{engine:<18}" + "".join(f"{cell['p50_ms']:>10.2f} ({cell['p90_ms']:5.2f})" if cell else f"{'-':>18}"
                                        for cell in cells))
    for name in names:
        model = result[f"{name}_1.00_224"]
        ratio = model.get("onnx_ours_vs_keras_export")
        peer = (f"our ONNX {ratio['']:.2f}x Keras's own ONNX export at batch 1, {ratio['_b32']:.2f}x at batch 32"
                if ratio else "no Keras model to compare ONNX with")
        print(f"{SHORT.get(name, name)} ({model['params'] / 1e6:.2f}M params, {model['macs'] / 1e6:.0f}M "
              f"MACs): int8 {model['int8_vs_float32_tflite_speedup']['p50_ms']:.2f}x and QAT int8 "
              f"{model['int8_qat_vs_float32_tflite_speedup']['p50_ms']:.2f}x float32 TFLite; {peer}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
