"""What a person wants to look at after an evaluation: the confusion matrix as a picture,
per-class precision, recall and F1, and the validation images the model got most wrong.

Plots are drawn with matplotlib (the `demo` extra: `pip install -e .[demo]`), off screen.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from mobilenet_tf.errors import UserError
from mobilenet_tf.rundir import write_atomic

CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion_matrix.csv"
PER_CLASS_CSV = "per_class.csv"
PREDICTIONS_CSV = "predictions.csv"
WORST_PNG = "worst_misclassified.png"
# The grid of worst mistakes: this many images at most, each drawn this many inches wide.
WORST_COUNT, CELL_INCHES, DPI = 16, 2.0, 100


class ReportError(UserError, RuntimeError):
    """The report cannot be drawn (matplotlib missing)."""


def pyplot():
    """matplotlib.pyplot on the off-screen Agg backend."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the evaluation report draws with matplotlib, which is not installed: "
                          "pip install -e .[demo]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """int64 [true class, predicted class] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def per_class(matrix: np.ndarray, class_names) -> list[dict]:
    """Per class: precision, recall, F1 and support (its true examples), from a confusion matrix."""
    rows = []
    for c, name in enumerate(class_names):
        hits, predicted, support = matrix[c, c], matrix[:, c].sum(), matrix[c].sum()
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": round(float(precision), 4), "recall": round(float(recall), 4),
                     "f1": round(float(f1), 4), "support": int(support)})
    return rows


def png(figure) -> bytes:
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def confusion_figure(matrix: np.ndarray, class_names, title: str = "Confusion matrix"):
    """A heat map of the counts (true classes down, predicted across), each cell labelled."""
    plt = pyplot()
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 30.0)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(matrix, cmap="Blues")
    ticks = range(n)
    axes.set_xticks(ticks, labels=class_names, rotation=90 if n > 10 else 0)
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if n <= 40:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > threshold else "black")
    figure.tight_layout()
    return figure


def worst_mistakes(labels, probabilities, count: int = WORST_COUNT) -> np.ndarray:
    """Indexes of the misclassified examples, most confidently wrong first."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    predicted = np.argmax(probabilities, axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]


def mistakes_figure(images, labels, probabilities, class_names):
    """A grid of images, each titled with its true class and the predicted one (and its probability)."""
    plt = pyplot()
    columns = min(4, max(len(images), 1))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * CELL_INCHES, rows * (CELL_INCHES + 0.4)),
                                squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, p in zip(axes.flat, images, labels, probabilities):
        guess = int(np.argmax(p))
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"true {class_names[label]}\npredicted {class_names[guess]} ({p[guess]:.2f})", fontsize=8)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    figure.tight_layout()
    return figure


def write_report(directory: str, class_names, labels, probabilities, files, decode) -> dict[str, str]:
    """Write the report into `directory`; {file kind: path}.

    `labels` [n] and `probabilities` [n, classes] of the evaluated examples, `files` their names
    (for predictions.csv), `decode(i)` the uint8 RGB image of example i (for the worst mistakes).
    """
    os.makedirs(directory, exist_ok=True)
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(labels, predicted, len(class_names))
    paths = {kind: os.path.join(directory, name) for kind, name in (
        ("confusion_png", CONFUSION_PNG), ("confusion_csv", CONFUSION_CSV), ("per_class_csv", PER_CLASS_CSV),
        ("predictions_csv", PREDICTIONS_CSV), ("worst_png", WORST_PNG))}
    write_atomic(paths["confusion_png"], png(confusion_figure(matrix, class_names)))
    write_atomic(paths["confusion_csv"], _csv([["true \\ predicted", *class_names],
                                               *([name, *row] for name, row in zip(class_names, matrix.tolist()))]))
    rows = per_class(matrix, class_names)
    write_atomic(paths["per_class_csv"], _csv([list(rows[0])] + [list(row.values()) for row in rows]))
    write_atomic(paths["predictions_csv"], _csv(
        [["file", "true", "predicted", "probability"]]
        + [[f, class_names[t], class_names[p], round(float(probabilities[i, p]), 6)]
           for i, (f, t, p) in enumerate(zip(files, labels, predicted))]))
    worst = worst_mistakes(labels, probabilities)
    figure = mistakes_figure([decode(i) for i in worst], labels[worst], probabilities[worst], class_names)
    write_atomic(paths["worst_png"], png(figure))
    return paths


def _csv(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
