"""The `--web` page's classify() in Chromium against LiteRT in Python, the same .tflite files.

    nice -n 10 python3 benchmarks/web_inference.py [--quick]

For V2-1.0 and V4-Conv-S at 224x224 (1000 classes, random weights), float32 and int8 (calibrated
on synthetic photos): the folder `mobilenet-export --web` writes, served by Python's static file
server on 127.0.0.1 and opened in headless Chromium (Debian's, through Playwright; LiteRT.js 2.5.3
on WebAssembly, the single-threaded relaxed-SIMD build, XNNPACK), against `ai_edge_litert`'s
interpreter on one thread (XNNPACK) in this process, each on a ready input. In the browser:
`window.mobilenet.classify()` of a 224x224 image (its crop and resize, the model, reading the
scores), and its `timing.modelMs` (the model alone: input tensor in, scores out). p50 in ms over
interleaved rounds; the last line is JSON with browser / Python (goal: within 2x).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import synthetic_photo  # noqa: E402
from photos import photos  # noqa: E402

from mobilenet_tf import config, tflite, web  # noqa: E402
from mobilenet_tf.models.build import build_from_config  # noqa: E402

SIZE = (224, 224)
MODELS = ("mobilenet_v2", "mobilenet_v4_conv_small")
MODES = ("float32", "int8")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def prepare(name: str, root: str, rng, calibration: int) -> dict:
    """{mode: (web folder, .tflite path)} of model `name`."""
    cfg = config.replace(config.Config(), model={"name": name, "image_size": SIZE, "num_classes": 1000,
                                                 "class_names": tuple(f"class_{i}" for i in range(1000))},
                         data={"eval_crop_fraction": 1.0})
    model = build_from_config(cfg.model)
    representative = np.stack([synthetic_photo(rng, *SIZE) for _ in range(calibration)]).astype(np.float32)
    base = os.path.join(root, name)
    paths = tflite.write_models(model, cfg, base, MODES, representative)
    folders = {}
    for mode in MODES:
        os.makedirs(os.path.join(base, mode), exist_ok=True)
        folder = web.write_page(paths[mode], mode, cfg, os.path.join(base, mode))
        folders[mode] = (os.path.relpath(folder, root), paths[mode])
    del model
    return folders


def pixel_differences(browser, origin: str, folder: str, root: str) -> dict:
    """Mean and 99th percentile of |page pixels - TensorFlow's evaluation pixels| (0-255 levels) on
    real JPEGs, for each evaluation transform at crop 0.875: the browser decodes the JPEG,
    TensorFlow decodes it (at a DCT scale for crop_bilinear when the window is twice the output)."""
    import base64

    from mobilenet_tf.data import preprocess

    jpegs = photos()
    result = {}
    for transform in ("crop_bilinear", "timm_bicubic"):
        copy = os.path.join(root, f"{folder}_{transform}")
        shutil.copytree(os.path.join(root, folder), copy)
        info_path = os.path.join(copy, "model_info.json")
        info = json.load(open(info_path))
        json.dump({**info, "crop_fraction": 0.875, "transform": transform}, open(info_path, "w"))
        page = browser.new_page()
        page.goto(origin + os.path.relpath(copy, root) + "/index.html")
        page.evaluate("window.mobilenet.ready")
        errors = []
        for jpeg in jpegs:
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
            seen = np.array(page.evaluate("async (u) => Array.from(await window.mobilenet.pixels(u))", url), np.float32)
            expected = preprocess.eval_pixels(tf.constant(jpeg), SIZE, 0.875, transform).numpy().ravel()
            errors.append(np.abs(seen - expected))
        page.close()
        errors = np.concatenate(errors)
        result[transform] = {"mean": round(float(errors.mean()), 2), "p99": round(float(np.percentile(errors, 99)), 1)}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds, per_round, calibration = (5, 10, 8) if args.quick else (15, 20, 32)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("needs Chromium (Debian: apt-get install chromium) and playwright (the test extra)")
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    image = synthetic_photo(rng, *SIZE)
    with tempfile.TemporaryDirectory(prefix="mobilenet_tf_web_") as root:
        cases = {(name, mode): folder for name in MODELS for mode, folder in prepare(name, root, rng, calibration).items()}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{server.server_address[1]}/"
        pythons = {key: tflite.LiteRTModel(path, num_threads=1) for key, (_, path) in cases.items()}
        tensors = {key: runner.quantize(image.astype(np.float32)[None]) for key, runner in pythons.items()}
        times = {key: {"python": [], "classify": [], "model": []} for key in cases}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=[
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pages = {}
            for key, (folder, _) in cases.items():
                page = browser.new_page()
                page.goto(origin + folder + "/index.html")
                page.evaluate("window.mobilenet.ready")
                page.evaluate("(rgb) => { const c = new OffscreenCanvas(224, 224); const d = new ImageData(224, 224); "
                              "for (let i = 0; i < 224 * 224; i++) { d.data.set(rgb.slice(3 * i, 3 * i + 3), 4 * i); "
                              "d.data[4 * i + 3] = 255; } c.getContext('2d').putImageData(d, 0, 0); "
                              "window.benchImage = c.transferToImageBitmap(); }", image.ravel().tolist())
                page.evaluate("async () => { for (let i = 0; i < 3; i++) await window.mobilenet.classify(window.benchImage); }")
                pages[key] = page
            for _ in range(rounds):  # every engine in turn, a block of calls each
                for key in cases:
                    measured = pages[key].evaluate(
                        "async (n) => { const out = []; for (let i = 0; i < n; i++) { const t = performance.now(); "
                        "await window.mobilenet.classify(window.benchImage); "
                        "out.push([performance.now() - t, window.mobilenet.timing.modelMs]); } return out; }", per_round)
                    times[key]["classify"] += [m[0] for m in measured]
                    times[key]["model"] += [m[1] for m in measured]
                    runner, tensor = pythons[key], tensors[key]
                    for _ in range(per_round):
                        started = tf.timestamp()
                        runner.invoke(tensor)
                        times[key]["python"].append(float(tf.timestamp() - started) * 1000)
            user_agent = pages[next(iter(pages))].evaluate("navigator.userAgent")
            pixels = pixel_differences(browser, origin, cases[("mobilenet_v2", "float32")][0], root)
            browser.close()
        server.shutdown()
    result = {"browser": re.search(r"Chrome/([0-9.]+)", user_agent).group(1), "runtime": f"LiteRT.js {web.runtime_version()}",
              "threads": 1}
    print(f"Chromium {result['browser']}, {result['runtime']} (WebAssembly, 1 thread) against ai_edge_litert, 1 thread")
    print(f"{'p50 ms':<28}{'classify()':>12}{'its model':>12}{'Python':>10}{'ratio':>8}")
    for (name, mode), measured in times.items():
        p50 = {kind: float(np.median(values)) for kind, values in measured.items()}
        ratio = p50["model"] / p50["python"]
        print(f"{name + ' ' + mode:<28}{p50['classify']:>12.2f}{p50['model']:>12.2f}{p50['python']:>10.2f}{ratio:>8.2f}")
        result[f"{name}_{mode}"] = {**{f"{k}_p50_ms": round(v, 3) for k, v in p50.items()},
                                    "browser_model_vs_python": round(ratio, 2),
                                    "browser_classify_vs_python": round(p50["classify"] / p50["python"], 2)}
    for transform, difference in pixels.items():
        print(f"page pixels off TensorFlow's ({transform}, real JPEGs): mean {difference['mean']} levels, "
              f"p99 {difference['p99']}")
    result["page_pixels_vs_tensorflow"] = pixels
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
