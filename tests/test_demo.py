"""`mobilenet-demo` driven for real: a headless Chromium through Playwright uploading held-out
digits and a bad file, eight concurrent gradio_client users, bad uploads through the API; and
`mobilenet-eval --report_dir`'s pictures and tables checked against the model's own predictions."""

import concurrent.futures
import csv
import glob
import os
import shutil
import signal
import struct
import subprocess
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mobilenet_tf import config, predict
from mobilenet_tf.data import tfrecord
from mobilenet_tf.data.digits import materialize

from clis import REPO, chatter_in, cli, env_for, free_port, run
from conftest import copy_of
from images import held_out_files

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.path.join(REPO, "docs", "images", "demo.png")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cache_dir, digits_run):
    """The shared trained run (it gets most held-out digits right), with its report."""
    model_dir = copy_of(digits_run[0], tmp_path_factory)
    scored = run("eval", f"--model_dir={model_dir}", f"--report_dir={model_dir / 'report'}", cache_dir=cache_dir)
    assert scored.returncode == 0, scored.stderr[-3000:]
    return model_dir, scored


@pytest.fixture(scope="module")
def answers(demo_run, cache_dir):
    """The export's own top class for each held-out digit (what the page must show)."""
    classifier = predict.load(str(demo_run[0] / "export"))
    files = held_out_files(cache_dir)
    probabilities = classifier.predict([open(path, "rb").read() for path, _ in files])
    return {path: (label, classifier.class_names[int(np.argmax(p))]) for (path, label), p in zip(files, probabilities)}


@pytest.fixture(scope="module")
def server(demo_run, cache_dir, tmp_path_factory):
    """`mobilenet-demo` on a free port, stopped with SIGTERM at the end (its uploads then gone)."""
    port, tmp = free_port(), tmp_path_factory.mktemp("demo_tmp")
    env = env_for(cache_dir, TMPDIR=str(tmp))
    process = subprocess.Popen(cli("demo", f"--model={demo_run[0] / 'export'}", f"--port={port}",
                                   "--max_upload_mb=1"),
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("Serving"):
            break
    assert process.poll() is None, process.stderr.read()[-3000:]
    uploads = glob.glob(str(tmp / "mobilenet_tf_demo_*"))
    assert len(uploads) == 1
    yield f"http://127.0.0.1:{port}/"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, process.stderr.read()[-3000:]
    assert not os.path.exists(uploads[0])  # no upload outlives the server
    assert not chatter_in(process.stderr.read())  # a quiet start: no line of TensorFlow's


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def top_class(result):
    label, message = result
    return label["label"] if label else None, message


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (CI installs Debian's chromium first)")
def test_browser_uploads_digits_and_a_bad_file(server, answers, tmp_path):
    from playwright.sync_api import sync_playwright

    right = [path for path, (label, guess) in answers.items() if str(label) == guess]
    chosen = [right[0], right[len(right) // 2], right[-1]]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(server)
        upload = 'input[data-testid="file-upload"]'
        page.wait_for_selector(upload, state="attached", timeout=60_000)

        def shows(text, selector='[data-testid="label-output-value"]'):
            page.wait_for_function("([s, t]) => (document.querySelector(s) || {}).innerText === t",
                                   arg=[selector, text], timeout=60_000)

        for path in chosen:
            page.set_input_files(upload, path)
            shows(str(answers[path][0]))
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        page.wait_for_timeout(1500)  # the label's fade-in
        page.screenshot(path=SCREENSHOT, full_page=True)  # the one README shows
        bad = tmp_path / "not_an_image.png"
        bad.write_text("this is a text file named .png")
        page.set_input_files(upload, str(bad))
        page.wait_for_function("() => document.querySelector('#result').innerText.includes('not an image')",
                               timeout=60_000)
        assert "Not classified" in page.inner_text("#result")
        page.set_input_files(upload, chosen[0])  # the page and the server go on
        shows(str(answers[chosen[0]][0]))
        browser.close()
    assert Image.open(SCREENSHOT).size[0] == 1200


def test_eight_concurrent_users_get_every_answer_right(server, answers):
    from gradio_client import handle_file

    paths = list(answers)[:40]

    def user(i):
        c = client(server)
        return [(path, top_class(c.predict(handle_file(path), api_name="/predict"))[0])
                for path in paths[i * 5:(i + 1) * 5]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [row for rows in pool.map(user, range(8)) for row in rows]
    assert len(results) == 40
    for path, guess in results:
        assert guess == answers[path][1], path


def png_header(width, height):
    """A PNG signature and IHDR announcing width x height (no image data follows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_bad_uploads_get_a_reason_and_the_server_goes_on(server, answers, tmp_path):
    from gradio_client import handle_file

    good = next(iter(answers))
    jpeg = tf.io.encode_jpeg(np.full((64, 64, 3), 128, np.uint8)).numpy()
    cases = {
        "text.png": (b"this is a text file", "not an image"),
        "empty.jpg": (b"", "the file is empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "Not classified"),
        "bomb.png": (png_header(100_000, 100_000), "megapixel limit"),
    }
    c = client(server)
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        label, message = top_class(c.predict(handle_file(str(tmp_path / name)), api_name="/predict"))
        assert label is None and reason in message, (name, message)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(2 * 2**20))  # over --max_upload_mb=1
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        c.predict(handle_file(str(big)), api_name="/predict")
    assert top_class(c.predict(handle_file(good), api_name="/predict"))[0] == answers[good][1]


def test_report_counts_are_the_models_predictions(demo_run, cache_dir):
    model_dir, scored = demo_run
    report = model_dir / "report"
    classifier = predict.load(str(model_dir))
    info = tfrecord.read_info(materialize(str(cache_dir)))
    labels, probabilities = predict.collect(classifier, info)
    guesses = np.argmax(probabilities, axis=1)
    with open(report / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == [str(c) for c in range(10)]
    matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (np.array(labels), guesses), 1)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 360
    with open(report / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    for c, row in enumerate(per_class):
        assert float(row["recall"]) == pytest.approx(expected[c, c] / expected[c].sum(), abs=1e-4)
        assert int(row["support"]) == expected[c].sum()
    top1 = float(np.mean(guesses == np.array(labels)))
    assert f'"top1": {top1}' in scored.stdout
    assert Image.open(report / "confusion_matrix.png").size == (650, 650)
    wrong = int(np.sum(guesses != np.array(labels)))
    rows_of_four = -(-min(wrong, 16) // 4) if wrong else 1
    assert Image.open(report / "worst_misclassified.png").size == (800 if wrong >= 4 else max(wrong, 1) * 200,
                                                                   rows_of_four * 240)
    # TensorBoard got the confusion matrix as an image at each epoch's end.
    tags = [v.tag for path in glob.glob(str(model_dir / "logs" / "validation" / "events.*"))
            for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value]
    assert tags.count("confusion_matrix") == config.load(str(model_dir)).train.epochs
