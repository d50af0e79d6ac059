"""`mobilenet-export --onnx`: the pixel model through tf2onnx, run by ONNX Runtime, scored and
predicted by the CLIs like every other form, and matching the SavedModel that TF Serving runs."""

import json
import os

import numpy as np
import onnx
import pytest
import tensorflow as tf

from mobilenet_tf import onnx_export
from mobilenet_tf.data.digits import materialize

from clis import env_for, one_error_line, run
from conftest import copy_of
from images import held_out_pixels


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cache_dir, digits_run):
    """The shared trained run, exported with --onnx (NHWC) and --onnx_nchw."""
    model_dir = copy_of(digits_run[0], tmp_path_factory)
    result = run("export", f"--model_dir={model_dir}", "--onnx", cache_dir=cache_dir)
    assert result.returncode == 0 and "ONNX " in result.stdout, result.stderr[-3000:]
    nchw = run("export", f"--model_dir={model_dir}", "--onnx", "--onnx_nchw", f"--export_dir={model_dir / 'nchw'}",
               cache_dir=cache_dir)
    assert nchw.returncode == 0, nchw.stderr[-3000:]
    return model_dir


def test_onnx_model_layout_and_checker(exported):
    path = exported / "export" / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("images", "probabilities")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 32, 32, 3]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 10]
    assert proto.opset_import[0].version == 17
    info = json.loads((path.parent / "model_info.json").read_text())
    assert info["layout"] == "NHWC [batch, 32, 32, 3]" and info["crop_fraction"] == 1.0
    assert (path.parent / "labels.txt").read_text().split() == [str(c) for c in range(10)]
    nchw = onnx.load(str(exported / "nchw" / "onnx" / "model.onnx"))
    assert [d.dim_param or d.dim_value for d in nchw.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 32, 32]


def test_onnx_matches_the_saved_model(exported, cache_dir):
    pixels, _ = held_out_pixels(cache_dir)
    served = tf.saved_model.load(str(exported / "export" / "2")).signatures["serving_pixels"]
    expected = served(pixels=tf.constant(pixels))["probabilities"].numpy()
    nhwc = onnx_export.OnnxModel(str(exported / "export" / "onnx" / "model.onnx"))
    nchw = onnx_export.OnnxModel(str(exported / "nchw" / "onnx" / "model.onnx"))
    assert nchw.nchw and not nhwc.nchw
    for model in (nhwc, nchw):
        actual = np.concatenate([model(batch) for batch in np.array_split(pixels, len(pixels) // 7)])  # batches of 7
        assert np.abs(actual - expected).max() <= 1e-4
        np.testing.assert_array_equal(np.argmax(actual, 1), np.argmax(expected, 1))
        single = model(pixels[:1])
        assert single.shape == (1, 10) and np.abs(single - expected[:1]).max() <= 1e-4


def test_eval_and_predict_take_the_onnx_model(exported, cache_dir):
    path = exported / "export" / "onnx" / "model.onnx"
    onnx_scores = run("eval", f"--onnx={path}", "--onnx_providers=CPUExecutionProvider", cache_dir=cache_dir)
    saved_scores = run("eval", f"--saved_model={exported / 'export' / '2'}", cache_dir=cache_dir)
    for result in (onnx_scores, saved_scores):
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(onnx_scores.stdout.splitlines()[-1]) == json.loads(saved_scores.stdout.splitlines()[-1])
    folder = os.path.join(materialize(str(cache_dir)), "val", "4")
    files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:3]]
    predicted = run("predict", f"--model={path}", "--json", *files, cache_dir=cache_dir)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = [json.loads(line) for line in predicted.stdout.splitlines() if line.startswith("{")]
    assert [row["file"] for row in rows] == files and all(len(row["predictions"]) == 5 for row in rows)
    bad = run("eval", f"--onnx={path}", "--onnx_providers=NoSuchProvider", cache_dir=cache_dir)
    assert "--onnx_providers=NoSuchProvider: this ONNX Runtime has no NoSuchProvider" in one_error_line(bad, "eval")


def test_bad_opset_and_missing_tf2onnx_fail_in_one_line(exported, cache_dir, tmp_path):
    path = exported / "export" / "onnx" / "model.onnx"
    before = path.read_bytes()
    result = run("export", f"--model_dir={exported}", "--onnx", "--onnx_opset=19", cache_dir=cache_dir)
    assert "--onnx_opset=19: tf2onnx 1.17.0 converts opsets 13 to 18" in one_error_line(result, "export")
    # An environment where tf2onnx cannot be imported (a package of that name that fails, first on the path).
    shadow = tmp_path / "shadow" / "tf2onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named tf2onnx')\n")
    env = env_for(cache_dir)
    env["PYTHONPATH"] = f"{shadow.parent}{os.pathsep}{env['PYTHONPATH']}"
    result = run("export", f"--model_dir={exported}", "--onnx", cache_dir=cache_dir, env=env)
    line = one_error_line(result, "export")
    assert "--onnx needs tf2onnx" in line and "pip install -e .[onnx]" in line, line
    assert path.read_bytes() == before and sorted(os.listdir(exported / "export")) == ["1", "2", "onnx"]
