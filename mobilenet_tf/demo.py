"""The web demo: upload, drop or paste a photo and see the model's top classes, in Gradio.

It serves any form `predict.load` takes (SavedModel, .tflite, .onnx, a run's model_dir) through
that same loader, so the page answers what `mobilenet-predict` answers. Each upload is checked
by the model's own input checks (a file that is no image, truncated, empty, announcing more
pixels than the export's limit, or over `max_upload_mb`), and a bad one gets a readable message
in the page while the server goes on. Requests of several users are batched (Gradio's queue,
`max_batch_size`); a bad upload in a batch fails only itself. Uploads live only in a temporary
directory that is removed when the server stops. Gradio runs offline: its analytics are off.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import tempfile

import numpy as np

from mobilenet_tf import config, predict
from mobilenet_tf.errors import UserError, tf_message

EXAMPLES = 6  # validation images offered as examples


class DemoError(UserError, RuntimeError):
    """The demo cannot start as asked (gradio missing); the message says what to do."""


def prepare_environment() -> str:
    """Gradio's settings for running offline, before it is imported; the upload directory (a new
    temporary one, removed at exit)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # A proxy from the environment would also be asked for localhost, where Gradio checks itself.
    if any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        hosts = [h for h in os.environ.get("NO_PROXY", "").split(",") if h]
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join([*hosts, "localhost", "127.0.0.1", "::1"])
    uploads = tempfile.mkdtemp(prefix="mobilenet_tf_demo_")
    os.environ["GRADIO_TEMP_DIR"] = uploads
    atexit.register(shutil.rmtree, uploads, ignore_errors=True)
    return uploads


def run_dir_of(path: str) -> str | None:
    """The training run a model path belongs to (the nearest directory upward with config.json)."""
    here = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
    while True:
        if os.path.isfile(os.path.join(here, config.CONFIG_FILE)):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


class Predictor:
    """Uploaded files -> (top classes, message) each, with one model call per batch."""

    def __init__(self, classifier: predict.Classifier, top_k: int, max_upload_bytes: int):
        self.classifier = classifier
        self.top_k = min(top_k, len(classifier.class_names))
        self.max_upload_bytes = max_upload_bytes

    def read(self, path: str) -> bytes:
        """The upload's bytes; UserError with the reason when it cannot be one image."""
        size = os.path.getsize(path)
        if size == 0:
            raise UserError("the file is empty")
        if size > self.max_upload_bytes:
            raise UserError(f"the file is {size / 2**20:.1f} MB, over the {self.max_upload_bytes / 2**20:g} MB limit")
        with open(path, "rb") as f:
            return f.read()

    def labels(self, probabilities: np.ndarray) -> dict[str, float]:
        (top,) = predict.top_k(probabilities[None], self.classifier.class_names, self.top_k)
        return {name: p for name, p in top}

    def __call__(self, paths: list[str | None]) -> tuple[list, list]:
        """Gradio's batched function: a list of uploads in, lists of outputs out (same order)."""
        import tensorflow as tf

        results: list = [None] * len(paths)
        good = {}
        for i, path in enumerate(paths):
            if path is None:
                results[i] = (None, "")
                continue
            try:
                good[i] = self.read(path)
            except (UserError, OSError) as error:
                results[i] = (None, f"**Not classified:** {error}")
        if good:
            try:  # one call for the batch; a bad image fails it, so then each alone
                rows = dict(zip(good, self.classifier.predict(list(good.values()))))
            except tf.errors.InvalidArgumentError:
                rows = {}
                for i, encoded in good.items():
                    try:
                        rows[i] = self.classifier.predict([encoded])[0]
                    except tf.errors.InvalidArgumentError as error:
                        results[i] = (None, f"**Not classified:** {tf_message(error)}")
            for i, probabilities in rows.items():
                top = self.labels(probabilities)
                best = next(iter(top))
                results[i] = (top, f"**{best}** ({top[best]:.1%})")
        return [label for label, _ in results], [message for _, message in results]


def examples(run_dir: str | None, directory: str, count: int = EXAMPLES) -> list[str]:
    """A few images of the run's validation split, written as files under `directory`."""
    if run_dir is None:
        return []
    import tensorflow as tf

    from mobilenet_tf.data import sources

    try:
        data = config.load(run_dir).data
        info = sources.resolve(data)
        # Spread over the classes: the first example of each of the first classes.
        chosen, seen = [], set()
        for encoded, label in info.records("validation").take(2000).as_numpy_iterator():
            if int(label) not in seen:
                seen.add(int(label))
                chosen.append((encoded, int(label)))
            if len(chosen) == count:
                break
    except (OSError, ValueError, tf.errors.OpError):
        return []
    paths = []
    for i, (encoded, label) in enumerate(chosen):
        extension = "jpg" if encoded[:3] == b"\xff\xd8\xff" else "png"
        path = os.path.join(directory, f"example_{i}_{info.class_names[label]}.{extension}".replace(os.sep, "_"))
        with open(path, "wb") as f:
            f.write(encoded)
        paths.append(path)
    return paths


def model_card(classifier: predict.Classifier, model_path: str, run_dir: str | None) -> str:
    """Markdown: architecture, width, input size, held-out top-1 and the export served."""
    lines = [f"**Serving** `{model_path}` ({classifier.kind.replace('_', ' ')}), "
             f"{len(classifier.class_names)} classes."]
    if run_dir:
        cfg = config.load(run_dir)
        m = cfg.model
        lines.append(f"**Model** {m.describe()}, input {m.image_size[0]}x{m.image_size[1]}"
                     f"{', quantization-aware trained' if m.qat else ''}; trained on `{cfg.data.dataset}`.")
        try:
            with open(os.path.join(run_dir, "metrics.json")) as f:
                metrics = json.load(f)
            lines.append(f"**Held-out top-1** {metrics['top1']:.2%} (top-5 {metrics['top5']:.2%}) on "
                         f"{metrics['examples']} validation images, as training measured it.")
        except (OSError, ValueError, KeyError):
            pass
    return "\n\n".join(lines)


def report_images(report_dir: str | None) -> list[str]:
    """The evaluation report's pictures (mobilenet-eval --report_dir), when there is one."""
    if not report_dir or not os.path.isdir(report_dir):
        return []
    return sorted(glob.glob(os.path.join(report_dir, "*.png")))


def _upload_component(gr):
    """gr.Image that hands the upload's path over untouched. gr.Image opens every upload with PIL
    first, and a file that is no image then fails the whole batch with Gradio's bare error; the
    model's own checks read it instead, and fail only that upload, with a reason. (An instance
    attribute, not a subclass: Gradio writes a .pyi stub beside any module defining a component.)"""
    image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Photo", height=280)
    image.preprocess = lambda payload: None if payload is None else str(payload.path)
    return image


def build_app(model_path: str, *, top_k: int = 3, max_upload_mb: float = 20, max_batch_size: int = 16,
              report_dir: str | None = None, example_dir: str | None = None, ema: bool = True):
    """The Gradio Blocks app serving `model_path`."""
    try:
        import gradio as gr
    except ImportError:
        raise DemoError("mobilenet-demo needs gradio, which is not installed: pip install -e .[demo]") from None

    classifier = predict.load(model_path, ema=ema)
    run_dir = run_dir_of(model_path)
    report_dir = report_dir or (os.path.join(run_dir, "report") if run_dir else None)
    predictor = Predictor(classifier, top_k, int(max_upload_mb * 2**20))
    with gr.Blocks(title="mobilenet_tf demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# What is in the photo?\n\n{model_card(classifier, model_path, run_dir)}")
        with gr.Row():
            image = _upload_component(gr)
            with gr.Column():
                label = gr.Label(num_top_classes=predictor.top_k, label="Top classes")
                message = gr.Markdown(label="Result", elem_id="result")
        shown = examples(run_dir, example_dir or tempfile.mkdtemp(dir=os.environ.get("GRADIO_TEMP_DIR")))
        if shown:
            gr.Examples(shown, inputs=image, label="Validation images")
        pictures = report_images(report_dir)
        if pictures:
            gr.Markdown("## Evaluation report")
            gr.Gallery(pictures, columns=len(pictures), label="Evaluation report", height=460, object_fit="contain")
        image.change(predictor, inputs=image, outputs=[label, message], batch=True, max_batch_size=max_batch_size,
                     api_name="predict")
    return app
