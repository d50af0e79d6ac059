"""`mobilenet-export --web`: the static page and its JavaScript API in a real browser (Debian's
Chromium through Playwright), served by a plain static file server with every request that is not to
that server refused: the held-out digits classified in the browser agree with the SavedModel, its
probabilities with Python's LiteRT on the same pixels; a bad file gets a message and the page
answers afterwards."""

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import threading

import numpy as np
import pytest

from mobilenet_tf import predict, tflite

from clis import REPO, run
from conftest import copy_of
from images import held_out_files, held_out_pixels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.path.join(REPO, "docs", "images", "web.png")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (CI installs Debian's chromium first)")


@pytest.fixture(scope="module", params=["int8", "float32"])
def web_run(request, tmp_path_factory, cache_dir, digits_run):
    """A copy of the shared digits run exported with --web: the int8 model (the default,
    calibrated) or the float32 one."""
    run_dir = copy_of(digits_run[0], tmp_path_factory)
    exported = run("export", f"--model_dir={run_dir}", "--web", f"--web_model={request.param}", "--json",
                   cache_dir=cache_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    written = json.loads(exported.stdout.strip().splitlines()[-1])
    assert written["web"] == str(run_dir / "export" / "web")
    return run_dir, written


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def served_page(directory):
    """`directory` served by Python's static file server on 127.0.0.1 and opened in headless
    Chromium, loaded (window.mobilenet.ready); what it asked of any other host is in `page.refused`."""
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.refused = []

            def route(request):
                if request.request.url.startswith(origin):
                    request.continue_()
                else:
                    page.refused.append(request.request.url)
                    request.abort()

            page.route("**/*", route)
            page.goto(origin)
            page.evaluate("window.mobilenet.ready")
            yield page
            browser.close()
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def page(web_run):
    """The page of the module's --web export (see `served_page`)."""
    with served_page(web_run[1]["web"]) as page:
        yield page


def data_url(path, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(open(path, "rb").read()).decode()


def browser_probabilities(page, urls):
    """[n, 10] probabilities of the page's `window.mobilenet.classify` for image URLs."""
    tops = page.evaluate("async (urls) => { const all = []; for (const u of urls) "
                         "all.push(await window.mobilenet.classify(u, Infinity)); return all; }", urls)
    return np.array([[next(c["score"] for c in top if c["label"] == str(i)) for i in range(10)] for top in tops])


def test_held_out_digits_agree_with_the_saved_model(page, web_run, cache_dir):
    """The held-out digits as they are (8x8 PNGs, which the page and TensorFlow each enlarge to
    32x32): the float32 page's top-1 agrees with the SavedModel's, the int8 page's with the same
    int8 model in Python's LiteRT (int8 itself agrees with float on 0.96 of them here: the
    quantization, not the page)."""
    run_dir, written = web_run
    mode = json.load(open(os.path.join(written["web"], "model_info.json")))["web"]["tflite"]
    files = held_out_files(cache_dir)
    browser = browser_probabilities(page, [data_url(path) for path, _ in files])
    encoded = [open(path, "rb").read() for path, _ in files]
    reference = predict.load(written["saved_model"] if mode == "float32" else written["tflite"]["int8"])
    agreement = np.mean(browser.argmax(1) == reference.predict(encoded).argmax(1))
    assert agreement >= 0.99, agreement
    assert np.mean(browser.argmax(1) == [label for _, label in files]) > 0.9
    # What the model saw: TensorFlow's evaluation pixels, bit for bit (numpy's rounding for int8's
    # uint8 input), computed in the page with TensorFlow's resize arithmetic, not the canvas's.
    import tensorflow as tf

    from mobilenet_tf.data import preprocess

    seen = np.array(page.evaluate("async (urls) => { const all = []; for (const u of urls) "
                                  "all.push(Array.from(await window.mobilenet.pixels(u))); return all; }",
                                  [data_url(path) for path, _ in files[::9]]), np.float32).reshape(-1, 32, 32, 3)
    expected = np.stack([preprocess.eval_pixels(tf.constant(e), (32, 32), 1.0).numpy() for e in encoded[::9]])
    np.testing.assert_array_equal(seen, np.round(expected) if mode == "int8" else expected)
    timing = page.evaluate("window.mobilenet.timing")
    assert timing["modelMs"] > 0 and timing["preprocessMs"] >= 0
    assert page.refused == []


def test_probabilities_are_litert_s_on_the_same_pixels(page, web_run, cache_dir, tmp_path):
    """32x32 PNGs of the pixels TensorFlow's evaluation gives (nothing left to resize): the page's
    probabilities are Python LiteRT's on them, within 0.02."""
    import tensorflow as tf

    run_dir, written = web_run
    mode = json.load(open(os.path.join(written["web"], "model_info.json")))["web"]["tflite"]
    pixels, _ = held_out_pixels(cache_dir, count=120)
    pixels = np.round(pixels)
    urls = ["data:image/png;base64," + base64.b64encode(tf.io.encode_png(p.astype(np.uint8)).numpy()).decode()
            for p in pixels]
    browser = browser_probabilities(page, urls)
    lite = tflite.LiteRTModel(written["tflite"][mode])
    python = np.concatenate([lite(p[None]) for p in pixels])
    assert np.abs(browser - python).max() <= 0.02
    assert np.mean(browser.argmax(1) == python.argmax(1)) >= 0.99


def test_a_bad_file_gets_a_message_and_the_page_goes_on(page, cache_dir, tmp_path):
    message = page.evaluate("async () => { try { await window.mobilenet.classify('data:text/plain,hello'); "
                            "return 'no error'; } catch (e) { return e.message; } }")
    assert message.startswith("not an image")
    bad = tmp_path / "not_an_image.png"
    bad.write_text("this is a text file named .png")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('not an image')")
    digit, label = held_out_files(cache_dir)[0]
    page.set_input_files("#file", digit)
    page.wait_for_function("() => !document.querySelector('#result').hidden && "
                           "document.querySelector('#message').textContent === ''")
    assert page.inner_text("#top li:first-child .label") == str(label)
    assert "model" in page.inner_text("#timing") and page.evaluate("window.mobilenet.info")["web"]["tflite"] in \
        page.inner_text("#model")
    if "int8" in page.inner_text("#model"):
        page.screenshot(path=SCREENSHOT, full_page=True)  # the one README shows
    huge = page.evaluate("async () => { const c = new OffscreenCanvas(8000, 7000); "
                         "c.getContext('2d').fillRect(0, 0, 1, 1); "
                         "try { await window.mobilenet.classify(c.transferToImageBitmap()); return 'no error'; } "
                         "catch (e) { return e.message; } }")
    assert huge.startswith("image too large: 8000x7000")
    assert page.refused == []


def test_the_folder_holds_everything_it_loads(web_run):
    """No CDN: the runtime's files are in the folder, pinned, with their licence."""
    folder = web_run[1]["web"]
    for name in ("index.html", "mobilenet.js", "page.js", "model.tflite", "labels.txt", "model_info.json",
                 "litert/core/index.js", "litert/wasm-utils/index.js", "litert/core/wasm/litert_wasm_internal.wasm",
                 "litert/core/wasm/litert_wasm_compat_internal.wasm", "litert/LICENSE"):
        assert os.path.isfile(os.path.join(folder, name)), name
    for name in ("index.html", "mobilenet.js", "page.js"):
        text = open(os.path.join(folder, name)).read()
        assert "http://" not in text and "https://" not in text, name
    info = json.load(open(os.path.join(folder, "model_info.json")))
    assert info["web"]["model"] == "model.tflite" and info["web"]["runtime"] == "2.5.3"
    assert info["web"]["tflite"] in ("int8", "float32")
