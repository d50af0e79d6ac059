"""`mobilenet-predict` as users run it (a subprocess), with a SavedModel, a .tflite file and a model_dir."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import paths
from mobilenet_tf.data.digits import materialize

import clis
from conftest import copy_of
from images import encode_bmp


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_run):
    """The shared trained run (export/1 written by training), and a float32 .tflite."""
    from mobilenet_tf import tflite
    from mobilenet_tf.checkpoint import restore_model

    model_dir = copy_of(digits_run[0], tmp_path_factory)
    model, cfg = restore_model(str(model_dir))
    tflite.write_models(model, cfg, str(model_dir / "export"), ["float32"])
    return model_dir


@pytest.fixture(scope="module")
def files(run, cache_dir, tmp_path_factory):
    """Three held-out digits (PNG, JPEG, BMP) and two files that fail: text, and a missing file."""
    folder = tmp_path_factory.mktemp("files")
    val = os.path.join(materialize(str(cache_dir)), "val")
    pngs = {}
    for label in ("3", "7", "0"):
        with open(os.path.join(val, label, sorted(os.listdir(os.path.join(val, label)))[0]), "rb") as f:
            pngs[label] = f.read()
    (folder / "three.png").write_bytes(pngs["3"])
    rgb = np.repeat(tf.io.decode_png(pngs["7"]).numpy(), 3, axis=2)
    (folder / "seven.jpg").write_bytes(tf.io.encode_jpeg(rgb, quality=100).numpy())
    (folder / "zero.bmp").write_bytes(encode_bmp(np.repeat(tf.io.decode_png(pngs["0"]).numpy(), 3, axis=2)))
    (folder / "notes.png").write_text("not an image\n")
    good = [str(folder / name) for name in ("three.png", "seven.jpg", "zero.bmp")]
    return good, str(folder / "notes.png"), str(folder / "missing.png")


def table_rows(stdout):
    """{file: [(class, probability), ...]} from the table (the file name on its first row only)."""
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["file", "class", "probability"]
    rows, current = {}, None
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:
            current = parts[0]
            rows[current] = []
        rows[current].append((parts[-2], float(parts[-1])))
    return rows


@pytest.mark.parametrize("form", ["saved_model", "tflite", "model_dir"])
def test_table_with_each_model_form_and_failures_reported(form, run, files):
    from mobilenet_tf import predict

    path = {"saved_model": run / "export" / "1", "tflite": run / "export" / "tflite" / "model_float32.tflite",
            "model_dir": run}[form]
    good, bad, missing = files
    result = clis.run("predict", f"--model={path}", good[0], bad, good[1], missing, good[2], cache_dir=run)
    # Some files failed: exit 1, one error line each, and every other file still predicted.
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mobilenet-predict: error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"mobilenet-predict: error: {bad}: not an image")
    assert errors[1] == f"mobilenet-predict: error: {missing}: No such file or directory"
    rows = table_rows(result.stdout)
    assert list(rows) == good
    expected = predict.load(str(path)).predict([pathlib.Path(f).read_bytes() for f in good])
    for file, probabilities in zip(good, expected):
        assert len(rows[file]) == 5
        assert [name for name, _ in rows[file]] == [str(c) for c in np.argsort(-probabilities)[:5]]
        np.testing.assert_allclose([p for _, p in rows[file]], np.sort(probabilities)[::-1][:5], atol=6e-5)


def test_json_lines_and_exit_status_0(run, files):
    good, bad, _ = files
    result = clis.run("predict", f"--model={run / 'export'}", "--json", "--top_k=3", *good, cache_dir=run)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["file"] for line in lines] == good
    for line in lines:
        probabilities = [p["probability"] for p in line["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {p["class"] for p in line["predictions"]} <= {str(c) for c in range(10)}
    # A failure is a JSON line too.
    result = clis.run("predict", f"--model={run / 'export'}", "--json", bad, cache_dir=run)
    assert result.returncode == 1
    (line,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert line["file"] == bad and line["error"].startswith("not an image")


def test_model_forms_are_recognized(run, tmp_path):
    from mobilenet_tf import predict

    assert paths.kind_of(str(run)) == "checkpoint"
    assert paths.kind_of(str(run / "export")) == "model_base"
    assert paths.kind_of(str(run / "export" / "1")) == "saved_model"
    assert paths.kind_of(str(run / "export" / "tflite" / "model_float32.tflite")) == "tflite"
    assert paths.kind_of(str(tmp_path)) is None
    with pytest.raises(ValueError, match="not a SavedModel"):
        predict.load(str(tmp_path))


def test_bad_model_fails_in_one_line(tmp_path, files):
    result = clis.run("predict", f"--model={tmp_path}", files[0][0], cache_dir=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mobilenet-predict: error:")]
    assert result.returncode == 1 and len(errors) == 1 and "--model" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
