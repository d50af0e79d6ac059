"""Load on the web demo: requests/s and p50/p99 latency of 1, 4 and 16 concurrent users uploading
224x224 JPEGs to `mobilenet-demo` serving a V2-1.0-224 SavedModel, with Gradio's batching
(--max_batch_size=16) and without (1), against the bound of calling the SavedModel's
`serving_default` directly in a loop in one process.

    nice -n 10 python benchmarks/demo_load.py [--quick]

Two kinds of users: gradio_client (Gradio's Python client: ~110 ms of CPU per request on this
machine, which leaves the server little of the two cores) and plain HTTP clients (httpx) calling
the same REST endpoints the client calls (upload, call, result), which cost next to no CPU. The
load generator shares the machine's cores with the server, so the table reports the fraction of
the bound reached. It also splits one request's time into HTTP + upload + queue, decoding and
preprocessing, and the model. Weights are random (latency does not depend on them). Prints a table
and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mobilenet_tf import config, export  # noqa: E402
from mobilenet_tf.models.build import build_from_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from inference import synthetic_photo  # noqa: E402

USERS = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch_size: int):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mobilenet_tf.cli.demo", f"--model={model}", f"--port={port}",
         f"--max_batch_size={max_batch_size}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("Serving"):
            return process, f"http://127.0.0.1:{port}/"
    raise RuntimeError("mobilenet-demo did not start")


def gradio_client_user(url: str):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return lambda path: client.predict(handle_file(path), api_name="/predict")


def http_user(url: str):
    """The REST calls gradio_client makes (upload, call, result), with one httpx client."""
    import httpx

    client = httpx.Client(timeout=300)

    def predict(path):
        with open(path, "rb") as f:
            (uploaded,) = client.post(f"{url}gradio_api/upload", files={"files": (os.path.basename(path), f)}).json()
        data = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]}
        event = client.post(f"{url}gradio_api/call/predict", json=data).json()["event_id"]
        answer = client.get(f"{url}gradio_api/call/predict/{event}").text
        if "event: complete" not in answer:
            raise RuntimeError(f"the demo answered {answer[:200]}")
        return json.loads(answer.rsplit("data:", 1)[1])

    return predict


def load(make_user, url: str, files: list[str], users: int, requests_per_user: int) -> dict:
    """Each user sends its requests one after the other; all users at once."""
    predictors = [make_user(url) for _ in range(users)]
    predictors[0](files[0])  # warm-up

    def user(i):
        latencies = []
        for r in range(requests_per_user):
            start = time.perf_counter()
            predictors[i](files[(i * requests_per_user + r) % len(files)])
            latencies.append(time.perf_counter() - start)
        return latencies

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        latencies = [t for rows in pool.map(user, range(users)) for t in rows]
    elapsed = time.perf_counter() - started
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return {"requests_per_s": round(len(latencies) / elapsed, 2), "p50_ms": round(float(p50), 1),
            "p99_ms": round(float(p99), 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per user (about a minute)")
    args = parser.parse_args(argv)
    requests_per_user = {1: 8, 4: 4, 16: 2} if args.quick else {1: 40, 4: 20, 16: 10}
    rng = np.random.default_rng(0)
    cfg = config.replace(
        config.Config(),
        model={"name": "mobilenet_v2", "alpha": 1.0, "image_size": (224, 224), "num_classes": 1000,
               "class_names": tuple(f"class_{i}" for i in range(1000))},
    )
    result = {"model": "mobilenet_v2_1.00_224"}
    with tempfile.TemporaryDirectory(prefix="mobilenet_tf_demo_load_") as tmp:
        saved = export.export_saved_model(build_from_config(cfg.model), cfg, os.path.join(tmp, "export"))
        files = []
        for i in range(32):
            path = os.path.join(tmp, f"photo_{i}.jpg")
            with open(path, "wb") as f:
                f.write(tf.io.encode_jpeg(synthetic_photo(rng, 224, 224), quality=90).numpy())
            files.append(path)

        # The bound: the SavedModel's signature in a loop, one image per call, in this process.
        loaded = tf.saved_model.load(saved)
        serve, pixels_fn = loaded.signatures["serving_default"], loaded.signatures["serving_pixels"]
        encoded = [tf.constant([open(path, "rb").read()]) for path in files]
        pixels = tf.constant(synthetic_photo(rng, 224, 224)[None].astype(np.float32))
        for fn, arg in ((serve, encoded[0]), (pixels_fn, pixels)):
            fn(**{"images" if fn is serve else "pixels": arg})
        timings = {"bytes": [], "pixels": []}
        for i in range(40 if args.quick else 200):
            start = time.perf_counter()
            serve(images=encoded[i % len(encoded)])["probabilities"].numpy()
            timings["bytes"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pixels_fn(pixels=pixels)["probabilities"].numpy()
            timings["pixels"].append(time.perf_counter() - start)
        bound_ms = float(np.median(timings["bytes"]) * 1000)
        model_ms = float(np.median(timings["pixels"]) * 1000)
        result["bound"] = {"requests_per_s": round(1000 / bound_ms, 2), "ms": round(bound_ms, 1)}

        for name, batch in (("batched", 16), ("unbatched", 1)):
            process, url = start_server(saved, batch)
            try:
                for client, make_user in (("gradio_client", gradio_client_user), ("http", http_user)):
                    result[f"{client}_{name}"] = {users: load(make_user, url, files, users, requests_per_user[users])
                                                  for users in USERS}
            finally:
                process.terminate()
                process.wait(timeout=60)

    one = result["http_unbatched"][1]["p50_ms"]
    result["one_request_ms"] = {"total": one, "model": round(model_ms, 1),
                                "decode_and_preprocess": round(bound_ms - model_ms, 1),
                                "http_upload_queue": round(one - bound_ms, 1)}
    result["batched_vs_unbatched_at_16"] = {client: round(
        result[f"{client}_batched"][16]["requests_per_s"] / result[f"{client}_unbatched"][16]["requests_per_s"], 2)
        for client in ("gradio_client", "http")}
    print(f"bound: SavedModel serving_default in a loop, {result['bound']['requests_per_s']} requests/s "
          f"({bound_ms:.1f} ms each)")
    print(f"{'users':>5} {'client':>13} {'mode':>10} {'req/s':>7} {'of bound':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99/p50':>8}")
    for client in ("gradio_client", "http"):
        for name in ("batched", "unbatched"):
            for users in USERS:
                row = result[f"{client}_{name}"][users]
                print(f"{users:>5} {client:>13} {name:>10} {row['requests_per_s']:>7.2f} "
                      f"{row['requests_per_s'] / result['bound']['requests_per_s']:>8.2f} {row['p50_ms']:>8.1f} "
                      f"{row['p99_ms']:>8.1f} {row['p99_ms'] / row['p50_ms']:>8.2f}")
    print("one request (1 HTTP user, unbatched), ms:", json.dumps(result["one_request_ms"]))
    for client, ratio in result["batched_vs_unbatched_at_16"].items():
        print(f"batching at 16 {client} users: {ratio:.2f}x the unbatched requests/s")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
