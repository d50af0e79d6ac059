"""Test images: encoders for the formats TensorFlow decodes but cannot write (BMP, GIF), and the
held-out digits as the exported models take them."""

import struct

import numpy as np


def encode_bmp(image: np.ndarray) -> bytes:
    """24-bit uncompressed BMP of a uint8 [h, w, 3] RGB image."""
    height, width, _ = image.shape
    stride = (width * 3 + 3) & ~3
    rows = [image[y, :, ::-1].tobytes() + b"\0" * (stride - width * 3) for y in range(height - 1, -1, -1)]
    pixels = b"".join(rows)
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def encode_gif(gray: np.ndarray) -> bytes:
    """GIF89a of a uint8 [h, w] grayscale image (gray palette; LZW with literal codes only)."""
    height, width = gray.shape
    codes = []
    flat = gray.reshape(-1).tolist()
    # A clear code every 250 literals keeps every code 9 bits wide.
    for start in range(0, len(flat), 250):
        codes.append(256)
        codes.extend(flat[start : start + 250])
    codes.append(257)
    bits, nbits, data = 0, 0, bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += 9
        while nbits >= 8:
            data.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        data.append(bits & 0xFF)
    blocks = b"".join(bytes([len(data[i : i + 255])]) + bytes(data[i : i + 255]) for i in range(0, len(data), 255))
    palette = bytes(v for g in range(256) for v in (g, g, g))
    screen = struct.pack("<HHBBB", width, height, 0xF7, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + palette + descriptor + b"\x08" + blocks + b"\x00\x3b"


def held_out_pixels(cache_dir, image_size=(32, 32), count=None):
    """(float32 0-255 pixels [n, H, W, 3], labels [n]) of the first `count` (default all) held-out
    digits, eval-preprocessed as the exported pixel models take them."""
    from mobilenet_tf.data import preprocess, tfrecord
    from mobilenet_tf.data.digits import materialize

    records = tfrecord.read_info(materialize(str(cache_dir))).records("validation")
    encoded, labels = zip(*(records.take(count) if count else records).as_numpy_iterator())
    return np.stack([preprocess.eval_pixels(e, image_size, 1.0).numpy() for e in encoded]), np.array(labels)


def held_out_files(cache_dir):
    """(path, label) of every held-out digit PNG, in label then file order."""
    import os

    from mobilenet_tf.data.digits import materialize

    root = os.path.join(materialize(str(cache_dir)), "val")
    return [(os.path.join(root, label, name), int(label)) for label in sorted(os.listdir(root))
            for name in sorted(os.listdir(os.path.join(root, label)))]
