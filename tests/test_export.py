"""`mobilenet-export` as users run it (a subprocess): the TF Serving SavedModel, fed exactly what
TF Serving feeds it, and the TFLite models beside it, run through LiteRT."""

import base64
import contextlib
import io
import json
import os
import re
import struct
import subprocess
import zlib

import numpy as np
import pytest
import tensorflow as tf

import clis
from clis import REPO, one_error_line
from images import encode_bmp, encode_gif


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """Two epochs of V2-0.35 on the digits, keeping a moving average of the weights."""
    from mobilenet_tf import config, train

    model_dir = tmp_path_factory.mktemp("run")
    cfg = config.replace(
        config.DIGITS, model={"alpha": 0.35},
        train={"epochs": 2, "model_dir": str(model_dir), "log_steps": 0, "ema_decay": 0.9},
        data={"cache_dir": str(cache_dir)},
    )
    train.train(cfg)
    return model_dir


@pytest.fixture(scope="module")
def exported(run, cache_dir):
    """`mobilenet-export` with every TFLite mode; train.train already wrote version 1."""
    result = clis.run("export", f"--model_dir={run}", "--tflite=float32,float16,dynamic,int8",
                     "--representative_examples=100", "--json", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run / "export", result


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported[0] / "2"))


def digit_pngs(cache_dir, n=8):
    """`n` held-out digit PNGs, with their labels, spread over the classes."""
    root = os.path.join(cache_dir, "digits", "val")
    out = []
    for i in range(n):
        label = str(i % 10)
        name = sorted(os.listdir(os.path.join(root, label)))[i // 10]
        with open(os.path.join(root, label, name), "rb") as f:
            out.append((f.read(), int(label)))
    return out


def test_export_writes_the_serving_layout_and_tflite_models(exported):
    export_dir, result = exported
    assert sorted(os.listdir(export_dir)) == ["1", "2", "tflite"]
    version = export_dir / "2"
    assert (version / "saved_model.pb").is_file()
    assert (version / "assets" / "labels.txt").read_text().split() == [str(c) for c in range(10)]
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert f"SavedModel {version}" in result.stdout
    tflite_dir = export_dir / "tflite"
    for mode in ("float32", "float16", "dynamic", "int8"):
        assert (tflite_dir / f"model_{mode}.tflite").is_file()
        assert f"TFLite {mode} {tflite_dir / f'model_{mode}.tflite'}" in result.stdout
    assert (tflite_dir / "labels.txt").read_text().split() == [str(c) for c in range(10)]
    info = json.loads((tflite_dir / "model_info.json").read_text())
    assert info["image_size"] == [32, 32] and info["crop_fraction"] == 1.0
    # The last line: every file written, as JSON.
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "saved_model": str(version), "tflite": {m: str(tflite_dir / f"model_{m}.tflite") for m in
                                                ("float32", "float16", "dynamic", "int8")}}
    # Weights take 4 bytes in float32, 2 in float16, 1 in int8 (plus the graph and scales).
    sizes = {mode: os.path.getsize(tflite_dir / f"model_{mode}.tflite") for mode in ("float32", "float16", "int8")}
    assert sizes["float32"] > 1.7 * sizes["float16"] and sizes["float32"] > 2.5 * sizes["int8"]


def test_saved_model_cli_lists_both_signatures(exported):
    result = subprocess.run(["saved_model_cli", "show", "--dir", str(exported[0] / "2"), "--all"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "signature_def['serving_default']" in out and "signature_def['serving_pixels']" in out
    default = out[out.index("signature_def['serving_default']"):]
    assert "inputs['images'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in default
    for name in ("probabilities", "classes", "scores", "class_names"):
        assert f"outputs['{name}']" in default
    pixels = out[out.index("signature_def['serving_pixels']"):]
    assert "inputs['pixels'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 32, 32, 3)" in pixels


def test_warmup_requests_replay_through_the_signatures(exported, served):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported[0] / "2" / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 1 <= len(records) <= 10
    signatures = set()
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        signature = request.model_spec.signature_name
        signatures.add(signature)
        # What TF Serving does with a PredictRequest: TensorProto -> tensor, keyed by input name.
        inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
        out = served.signatures[signature](**inputs)
        batch = next(iter(inputs.values())).shape[0]
        assert out["probabilities"].shape == (batch, 10)
    assert signatures == {"serving_default", "serving_pixels"}


def test_rest_b64_instances_as_tf_serving_decodes_them(served, run, cache_dir):
    """A REST body {"instances": [{"b64": ...}]}: TF Serving base64-decodes each into the string
    tensor `images`. The answer is the checkpoint's model (EMA weights) on evaluation pixels."""
    from mobilenet_tf.checkpoint import restore_model
    from mobilenet_tf.data import preprocess

    pngs = [png for png, _ in digit_pngs(cache_dir)]
    body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()} for png in pngs]})
    images = [base64.b64decode(instance["b64"]) for instance in json.loads(body)["instances"]]
    served_probabilities = served.signatures["serving_default"](images=tf.constant(images))["probabilities"]

    model, _ = restore_model(str(run), ema=True)
    pixels = tf.stack([preprocess.eval_image(tf.constant(png), (32, 32), 1.0) for png in pngs])
    np.testing.assert_allclose(served_probabilities.numpy(), model(pixels, training=False).numpy(), atol=1e-5)
    # The moving average, not the raw weights, is what was exported.
    raw, _ = restore_model(str(run), ema=False)
    assert np.abs(raw(pixels, training=False).numpy() - served_probabilities.numpy()).max() > 1e-3


def png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def jpeg_claiming(height, width):
    """A real small JPEG whose frame header is rewritten to announce height x width."""
    jpeg = bytearray(tf.io.encode_jpeg(np.zeros([16, 16, 3], np.uint8)).numpy())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def test_header_size_of_every_format():
    from mobilenet_tf.export import header_size

    rgb = np.random.default_rng(0).integers(0, 256, [37, 53, 3], dtype=np.uint8)
    for encoded in (tf.io.encode_png(rgb).numpy(), tf.io.encode_jpeg(rgb).numpy(), encode_bmp(rgb),
                    encode_gif(rgb[:, :, 0])):
        assert header_size(tf.constant(encoded)).numpy().tolist() == [37, 53]
    assert header_size(tf.constant(b"GIF")).numpy().tolist() == [0, 0]


def test_bad_bytes_and_oversized_images_are_refused_and_serving_continues(served, cache_dir):
    serve = served.signatures["serving_default"]
    for junk in (b"this is not an image", b"", b"\x89PN"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="not an image"):
            serve(images=tf.constant([junk]))
    # Headers announcing 100+ megapixels with (almost) no pixel data behind them: refused on the
    # header (the message says so), where a decode would have failed differently or eaten memory.
    bombs = [
        png_header(10_000, 10_000),
        jpeg_claiming(10_000, 10_000),
        b"GIF89a" + struct.pack("<HH", 65_535, 65_535) + b"\xf7\0\0",
        b"BM" + struct.pack("<IHHIIii", 0, 0, 0, 54, 40, 10_000, -10_000) + b"\0" * 40,
    ]
    for bomb in bombs:
        with pytest.raises(tf.errors.InvalidArgumentError, match="50 megapixel limit"):
            serve(images=tf.constant([bomb]))
    png = digit_pngs(cache_dir, 1)[0][0]
    # One bad image fails its whole request; the next request is served.
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(images=tf.constant([png, b"junk"]))
    assert serve(images=tf.constant([png]))["probabilities"].shape == (1, 10)


def test_tflite_models_take_pixels_and_match_the_saved_model(exported, served, cache_dir):
    from ai_edge_litert.interpreter import Interpreter

    from mobilenet_tf import tflite
    from mobilenet_tf.data import preprocess

    pngs = [png for png, _ in digit_pngs(cache_dir)]
    pixels = tf.stack([preprocess.eval_pixels(tf.constant(png), (32, 32), 1.0) for png in pngs]).numpy()
    expected = served.signatures["serving_pixels"](pixels=pixels)["probabilities"].numpy()
    # Largest difference to the SavedModel; int8 (probabilities in steps of 1/256, on a barely
    # trained model) is held to a mean difference: 0.013-0.024 measured over seeds 0-2, with the 1x1
    # convolutions trained as Conv2D or as MatMul. Accuracy is checked in test_eval_cli.py.
    tolerance = {"float32": 1e-5, "float16": 2e-2, "dynamic": 5e-2, "int8": None}
    for mode, atol in tolerance.items():
        path = str(exported[0] / "tflite" / f"model_{mode}.tflite")
        model = tflite.LiteRTModel(path)
        assert list(model.input["shape"]) == [1, 32, 32, 3]
        probabilities = model(pixels)
        assert probabilities.shape == (8, 10) and probabilities.dtype == np.float32
        if atol:
            np.testing.assert_allclose(probabilities, expected, atol=atol, err_msg=mode)
        else:
            assert np.abs(probabilities - expected).mean() < 0.04
    # int8 is full-integer: uint8 pixels in (the raw 0-255 value: scale 1, zero point 0), int8
    # everywhere inside, float32 probabilities out.
    interpreter = Interpreter(model_path=str(exported[0] / "tflite" / "model_int8.tflite"))
    interpreter.allocate_tensors()
    (input_details,) = interpreter.get_input_details()
    assert input_details["dtype"] == np.uint8
    scale, zero_point = input_details["quantization"]
    assert abs(scale - 1.0) < 1e-5 and zero_point == 0
    float_tensors = [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert float_tensors == [interpreter.get_output_details()[0]["name"]]


@pytest.mark.parametrize(
    "args, flag",
    [(["--tflite=float32,int4"], "--tflite"), (["--version=2"], "--version")],
)
def test_bad_flags_fail_in_one_line(exported, cache_dir, args, flag):
    export_dir, _ = exported
    result = clis.run("export", f"--model_dir={export_dir.parent}", *args, cache_dir=cache_dir)
    assert flag in one_error_line(result, "export")
    assert sorted(os.listdir(export_dir)) == ["1", "2", "tflite"]


def test_missing_run_fails_in_one_line(tmp_path, cache_dir):
    result = clis.run("export", f"--checkpoint={tmp_path / 'ckpt-7'}", cache_dir=cache_dir)
    assert "--checkpoint" in one_error_line(result, "export")


def docs_snippet(marker):
    """The ```python block of docs/serving.md containing `marker`."""
    with open(os.path.join(REPO, "docs", "serving.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def test_readme_grpc_client_against_a_prediction_service(served, cache_dir, tmp_path):
    """docs/serving.md's gRPC client, against an in-process PredictionService doing what TF Serving's
    does with a Predict request: TensorProtos to tensors, the signature, tensors to TensorProtos."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            signature = served.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
            try:
                outputs = signature(**inputs)
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    png, label = digit_pngs(cache_dir, 4)[3]
    (tmp_path / "digit.png").write_bytes(png)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    snippet = docs_snippet("prediction_service_pb2_grpc").replace("localhost:8500", f"localhost:{port}")
    try:
        with pytest.raises(grpc.RpcError) as error:
            exec(snippet.replace('"digit.png"', repr(str(junk))), {})
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not an image" in error.value.details()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(snippet.replace('"digit.png"', repr(str(tmp_path / "digit.png"))), {})
    finally:
        server.stop(0)
    expected = served.signatures["serving_default"](images=tf.constant([png]))["class_names"].numpy()[0, 0]
    assert out.getvalue().startswith(f"[[{expected!r}")


def test_readme_tflite_snippet(exported, served, cache_dir):
    from mobilenet_tf.data import preprocess

    png = digit_pngs(cache_dir, 1)[0][0]
    pixels = preprocess.eval_pixels(tf.constant(png), (32, 32), 1.0).numpy().round()
    path = str(exported[0] / "tflite" / "model_int8.tflite")
    snippet = docs_snippet("ai_edge_litert").replace("runs/mobilenet_v2_digits/export/tflite/model_int8.tflite", path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet, {"pixels": pixels})
    printed = np.array(out.getvalue().strip("[] \n").split(), np.float32)
    expected = served.signatures["serving_pixels"](pixels=pixels[None])["probabilities"].numpy()[0]
    assert printed.shape == (10,) and printed.argmax() == expected.argmax()
