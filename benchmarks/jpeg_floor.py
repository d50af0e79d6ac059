"""How much decoding only the Inception window can save: libjpeg-turbo itself, with no TensorFlow.

    nice -n 10 python3 benchmarks/jpeg_floor.py [--quick] [--content=synthetic|photos]

Needs gcc and libjpeg-turbo's headers (Debian: `apt-get install gcc libjpeg62-turbo-dev`). On the
JPEGs of `input_pipeline.py` and the Inception windows `train_image` samples, it times, per image on
1 thread (best of several passes):

- libjpeg-turbo, from a small C program compiled in the run: the full decode (the peer), the window
  decode as `decode_and_crop_jpeg` does it (`jpeg_crop_scanline`, `jpeg_skip_scanlines`, stop after
  the window's last row), and a 16x16 window at the bottom right (all rows entropy-decoded, almost
  nothing else: the entropy decoder's share of a decode).
- TensorFlow, in the same run: `decode_jpeg`, `decode_and_crop_jpeg` on the same windows, and that
  followed by `preprocess.resize` (the floor of any pipeline built from TF's kernels).

`1 - window / full` is all a crop-on-the-bytes pipeline can save over a bare full decode; the resize,
the scaling to [-1, 1], reading the records and batching must fit in it for the pipeline to keep
up with a bare decode. The last line is JSON: each time as a multiple of its own library's full decode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf.config import DataConfig  # noqa: E402
from mobilenet_tf.data import preprocess  # noqa: E402

from input_pipeline import CONTENT, HEIGHT, IMAGE_SIZE, QUALITY, WIDTH, per_image_timer  # noqa: E402

C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <jpeglib.h>
/* argv: items file, mode (0 full, 1 window, 2 16x16 at the bottom right), passes.
   Items: int32 length, y, x, height, width, then the JPEG bytes. Prints the best pass's ms/image. */
int main(int argc, char **argv) {
  FILE *f = fopen(argv[1], "rb");
  int mode = atoi(argv[2]), passes = atoi(argv[3]), n = 0, head[5];
  static int win[4096][4], len[4096]; static unsigned char *data[4096];
  while (n < 4096 && fread(head, 4, 5, f) == 5) {
    len[n] = head[0]; for (int k = 0; k < 4; k++) win[n][k] = head[k + 1];
    data[n] = malloc(len[n]);
    if (fread(data[n], 1, len[n], f) != (size_t)len[n]) return 1;
    n++;
  }
  unsigned char *rows = malloc(8192 * 8192 * 3);
  struct jpeg_decompress_struct cinfo; struct jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr); jpeg_create_decompress(&cinfo);
  double best = 1e9;
  for (int p = 0; p < passes; p++) {
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
      jpeg_mem_src(&cinfo, data[i], len[i]); jpeg_read_header(&cinfo, TRUE);
      cinfo.out_color_space = JCS_RGB; cinfo.dct_method = JDCT_ISLOW; cinfo.do_fancy_upsampling = TRUE;
      jpeg_start_decompress(&cinfo);
      int y = 0, x = 0, h = cinfo.output_height, w = cinfo.output_width;
      if (mode == 1) { y = win[i][0]; x = win[i][1]; h = win[i][2]; w = win[i][3]; }
      if (mode == 2) { y = h - 16; x = w - 16; h = w = 16; }
      JDIMENSION cx = x, cw = w;
      if (mode) jpeg_crop_scanline(&cinfo, &cx, &cw);
      if (y) jpeg_skip_scanlines(&cinfo, y);
      for (int r = 0; r < h; r++) { JSAMPROW row = rows + (size_t)r * cw * 3; jpeg_read_scanlines(&cinfo, &row, 1); }
      jpeg_abort_decompress(&cinfo);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6) / n;
    if (ms < best) best = ms;
  }
  printf("%.4f\n", best);
  return 0;
}
"""


def compile_decoder(root: str) -> str:
    """The C program above, built in `root` against the system's libjpeg-turbo."""
    if shutil.which("gcc") is None:
        sys.exit("jpeg_floor.py: gcc not found; install it (Debian: apt-get install gcc libjpeg62-turbo-dev)")
    source, binary = os.path.join(root, "floor.c"), os.path.join(root, "floor")
    with open(source, "w") as f:
        f.write(C_SOURCE)
    built = subprocess.run(["gcc", "-O2", "-o", binary, source, "-ljpeg"], capture_output=True, text=True)
    if built.returncode:
        sys.exit("jpeg_floor.py: could not build against libjpeg-turbo (Debian: apt-get install "
                 f"libjpeg62-turbo-dev): {built.stderr.strip().splitlines()[-1]}")
    return binary


def inception_windows(jpegs: list[bytes]) -> np.ndarray:
    """[n, 4] (y, x, height, width): the windows `train_image` samples for seeds (0, i)."""
    data = DataConfig(dataset="synthetic")

    def window(encoded, index):
        seed = tf.random.experimental.stateless_split(tf.stack([tf.constant(0, tf.int64), index]), 2)[0]
        return tf.stack(preprocess.inception_window(tf.image.extract_jpeg_shape(encoded), seed, data.crop_area_range,
                                                    data.crop_aspect_range, data.eval_crop_fraction))

    ds = tf.data.Dataset.from_tensor_slices((jpegs, np.arange(len(jpegs), dtype=np.int64))).map(window)
    return np.stack(list(ds.as_numpy_iterator()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and passes (under a minute)")
    parser.add_argument("--content", choices=sorted(CONTENT), default="synthetic", help="what the JPEGs show")
    args = parser.parse_args()
    num_images, passes = (256, 5) if args.quick else (1024, 11)
    with tempfile.TemporaryDirectory() as root:
        binary = compile_decoder(root)  # first: a missing compiler or header fails before any work
        jpegs = [tf.io.encode_jpeg(CONTENT[args.content](i), quality=QUALITY).numpy() for i in range(num_images)]
        windows = inception_windows(jpegs)
        area = np.mean(windows[:, 2] * windows[:, 3]) / (HEIGHT * WIDTH)
        below = np.mean(windows[:, 0] + windows[:, 2]) / HEIGHT
        size = np.mean([len(j) for j in jpegs]) / 1000
        print(f"{num_images} {args.content} JPEGs {WIDTH}x{HEIGHT} q{QUALITY}, mean {size:.0f} KB; Inception windows: "
              f"mean area {area:.0%} of the photo, mean last row {below:.0%} of the height down")
        items = os.path.join(root, "items")
        with open(items, "wb") as f:
            for jpeg, window in zip(jpegs, windows):
                f.write(struct.pack("<5i", len(jpeg), *map(int, window)) + jpeg)
        source = tf.data.Dataset.from_tensor_slices((jpegs, windows)).cache().repeat()
        tf_steps = {
            "full decode": lambda encoded, window: tf.io.decode_jpeg(encoded, channels=3),
            "window decode": lambda encoded, window: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
            "window decode + resize": lambda encoded, window: preprocess.resize(
                tf.image.decode_and_crop_jpeg(encoded, window, channels=3), IMAGE_SIZE),
        }
        tf_blocks = {name: per_image_timer(source, step, num_images) for name, step in tf_steps.items()}
        libjpeg_modes = {"full decode": 0, "window decode": 1, "16x16 at the bottom right (entropy decoding)": 2}
        times = {("libjpeg", name): [] for name in libjpeg_modes} | {("tf", name): [] for name in tf_steps}
        for _ in range(3):  # interleaved rounds: both libraries see the same moments of the machine
            for name, mode in libjpeg_modes.items():
                out = subprocess.run([binary, items, str(mode), str(passes)],
                                     capture_output=True, text=True, check=True)
                times[("libjpeg", name)].append(float(out.stdout))
            for name, block in tf_blocks.items():
                times[("tf", name)].append(min(block() for _ in range(max(1, passes // 3))))
    best = {key: min(values) for key, values in times.items()}
    ratios = {}
    for library in ("libjpeg", "tf"):
        full = best[(library, "full decode")]
        print(f"{library}:")
        for (lib, name), ms in best.items():
            if lib == library:
                print(f"  {name:45s} {ms:6.3f} ms  ({ms / full:.2f}x its full decode)")
                if name != "full decode":
                    key = name.split(" (")[0].replace(" + ", "_").replace(" ", "_")
                    ratios[f"{library}_{key}"] = round(ms / full, 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
