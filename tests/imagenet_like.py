"""Small image trees laid out like ILSVRC2012 (with its hazards) and like class folders, for tests.

No image library beyond TensorFlow: CMYK JPEGs come from `encode_cmyk_jpeg`, a baseline JPEG
encoder whose 8x8 blocks are flat (DC coefficients only), which is all a CMYK test needs.
"""

import csv
import os
import struct

import numpy as np
import tensorflow as tf

WNIDS = ("n01440764", "n01443537", "n01484850")
TEXTS = ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark")
TRAIN_PER_CLASS = 6
# Hazards added to train/<WNIDS[0]>/: name -> reason (None: converted after re-encoding).
HAZARDS = {
    "n01440764_cmyk.JPEG": None,
    "n01440764_png.JPEG": None,
    "n01440764_gray.JPEG": None,
    "n01440764_empty.JPEG": "empty file",
    "n01440764_truncated.JPEG": "truncated JPEG",
    "n01440764_corrupt.JPEG": "corrupt JPEG (jpeg::Uncompress failed. Invalid JPEG data or crop window.)",
    "n01440764_text.JPEG": "not an image",
}
VAL_LABELS = (0, 1, 2, 2, 1)  # ILSVRC2012_val_00000001..5; _00000006 has no label in the CSV


def pattern(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth uint8 RGB image that differs per seed (JPEG keeps it close)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * (3 + seed) + seed * 40) % 256, (y * (2 + seed) + 17 * seed) % 256,
                     ((x + y) * (1 + seed % 3)) % 256], -1).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def encode_cmyk_jpeg(cmyk: np.ndarray) -> bytes:
    """A 4-component (Adobe CMYK) baseline JPEG of uint8 [h, w, 4], h and w multiples of 8; each 8x8
    block takes its mean value. Adobe files store inverted CMYK: decoders give R = C * K / 255."""
    height, width, _ = cmyk.shape
    out = bytearray(b"\xff\xd8")
    out += _segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))  # quantization 1: a DC coefficient is 8 * (mean - 128)
    components = b"".join(bytes([c + 1, 0x11, 0]) for c in range(4))  # id, no subsampling, table 0
    out += _segment(0xC0, struct.pack(">BHHB", 8, height, width, 4) + components)
    out += _segment(0xC4, b"\x00" + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12)))  # DC: 4-bit code = size
    out += _segment(0xC4, b"\x10" + bytes([0, 2] + [0] * 14) + bytes([0x00, 0xF0]))  # AC: EOB is '00'
    out += _segment(0xDA, bytes([4]) + b"".join(bytes([c + 1, 0]) for c in range(4)) + bytes([0, 63, 0]))
    bits, previous = [], [0] * 4
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            for c in range(4):
                dc = int(round(cmyk[by : by + 8, bx : bx + 8, c].mean())) * 8 - 1024
                diff, previous[c] = dc - previous[c], dc
                size = abs(diff).bit_length()
                value = diff if diff >= 0 else diff + (1 << size) - 1
                bits += [(size >> k) & 1 for k in (3, 2, 1, 0)]
                bits += [(value >> k) & 1 for k in range(size - 1, -1, -1)]
                bits += [0, 0]
    bits += [1] * (-len(bits) % 8)
    for i in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[i : i + 8])), 2)
        out += bytes([byte, 0]) if byte == 0xFF else bytes([byte])
    return bytes(out + b"\xff\xd9")


def hazard_bytes(name: str) -> bytes:
    good = jpeg(pattern(48, 64, 5))
    cmyk = np.zeros((16, 24, 4), np.uint8)
    cmyk[..., 0], cmyk[..., 1], cmyk[..., 3] = 255, 100, 255  # R = 255, G = 100, B = 0
    return {
        "n01440764_cmyk.JPEG": encode_cmyk_jpeg(cmyk),
        "n01440764_png.JPEG": tf.io.encode_png(pattern(20, 30, 7)).numpy(),
        "n01440764_gray.JPEG": jpeg(pattern(32, 40, 3)[:, :, :1]),
        "n01440764_empty.JPEG": b"",
        "n01440764_truncated.JPEG": good[: len(good) // 2],
        "n01440764_corrupt.JPEG": good[:200] + bytes(np.random.default_rng(0).integers(0, 255, 3000, np.uint8))
        + b"\xff\xd9",
        "n01440764_text.JPEG": b"<html>Access denied</html>\n",
    }[name]


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_imagenet(root, *, flat_val: bool = True, hazards: bool = True) -> dict:
    """ROOT/train/<wnid>/*.JPEG (+ hazards), ROOT/val (flat with LOC_val_solution.csv, or per wnid) and
    ROOT/LOC_synset_mapping.txt. Returns the paths of the two text files."""
    root = str(root)
    for c, wnid in enumerate(WNIDS):
        for i in range(TRAIN_PER_CLASS):
            image = pattern(40 + 8 * i, 56 + 4 * c, seed=c * 10 + i)
            write(os.path.join(root, "train", wnid, f"{wnid}_{i}.JPEG"), jpeg(image))
    if hazards:
        for name in HAZARDS:
            write(os.path.join(root, "train", WNIDS[0], name), hazard_bytes(name))
    for i, label in enumerate(VAL_LABELS + (None,)):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        folder = "val" if flat_val or label is None else os.path.join("val", WNIDS[label])
        if not flat_val and label is None:
            continue
        write(os.path.join(root, folder, name), jpeg(pattern(50, 50, seed=100 + i)))
    solution = os.path.join(root, "LOC_val_solution.csv")
    with open(solution, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ImageId", "PredictionString"])
        for i, label in enumerate(VAL_LABELS):
            out.writerow([f"ILSVRC2012_val_{i + 1:08d}", f"{WNIDS[label]} 10 20 30 40 {WNIDS[label]} 1 2 3 4"])
    mapping = os.path.join(root, "LOC_synset_mapping.txt")
    with open(mapping, "w") as f:
        f.writelines(f"{wnid} {text}\n" for wnid, text in zip(WNIDS, TEXTS))
    return {"validation_labels": solution, "synset_words": mapping}


def make_folders(root, counts=(5, 8, 3), png: bool = False) -> list[str]:
    """ROOT/<class>/ with counts[c] images each (PNG or JPEG); returns the class names."""
    classes = [f"class_{c}" for c in range(len(counts))]
    for c, n in enumerate(counts):
        for i in range(n):
            image = pattern(24 + 8 * (i % 3), 32, seed=c * 20 + i)
            data = tf.io.encode_png(image).numpy() if png else jpeg(image)
            write(os.path.join(str(root), classes[c], f"img_{i:03d}.{'png' if png else 'jpg'}"), data)
    return classes
