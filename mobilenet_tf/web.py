"""A static web page that classifies on the visitor's own machine: `mobilenet-export --web`.

`<export_dir>/web/` holds the page (`index.html`, `page.js`, `style.css`), its JavaScript API
(`mobilenet.js`: `window.mobilenet.ready`, `window.mobilenet.classify(source)`), the TFLite model
(int8 by default, or float32), labels.txt and model_info.json (the input size, crop and transform
the page applies), and the runtime, LiteRT.js 2.5.3 (`litert/`: npm's @litertjs/core and
@litertjs/wasm-utils, Apache-2.0, as published, pinned and checked by scripts/vendor_litertjs.sh,
shipped inside this package). Any static file server serves it; it fetches nothing from elsewhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mobilenet_tf import export
from mobilenet_tf.config import Config

DIR = "web"
MODES = ("int8", "float32")
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webpage")


def runtime_version() -> str:
    with open(os.path.join(PAGE, "litert", "VERSION")) as f:
        return f.read().strip()


def write_page(tflite_path: str, mode: str, cfg: Config, export_base: str) -> str:
    """Write `<export_base>/web/` around the TFLite model at `tflite_path` (`mode`: int8 or
    float32), through a temporary folder renamed into place; its path."""
    final = os.path.join(export_base, DIR)
    tmp = tempfile.mkdtemp(prefix=".web-", dir=export_base)
    try:
        shutil.copytree(PAGE, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(tflite_path, os.path.join(tmp, "model.tflite"))
        export.write_sidecar(tmp, cfg, web={"model": "model.tflite", "tflite": mode, "runtime": runtime_version()})
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
