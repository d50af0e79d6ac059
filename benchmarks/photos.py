"""Real JPEGs for the preprocessing benchmarks: the two photos scikit-learn bundles (640x427), as they
are and re-encoded at other sizes (Pillow's bicubic, quality 90). No TensorFlow, no PyTorch."""

from __future__ import annotations

import io
import os

from PIL import Image

SIZES = ((427, 640), (375, 500), (600, 800), (1200, 1600), (3024, 4032))  # (height, width)


def photos() -> list[bytes]:
    """Each of the two photos at each of SIZES, as JPEG bytes."""
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    jpegs = []
    for name in ("china.jpg", "flower.jpg"):
        data = open(os.path.join(folder, name), "rb").read()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        for height, width in SIZES:
            if (height, width) == (image.height, image.width):
                jpegs.append(data)
                continue
            buffer = io.BytesIO()
            image.resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=90)
            jpegs.append(buffer.getvalue())
    return jpegs
