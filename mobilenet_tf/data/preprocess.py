"""Pure image ops: encoded bytes -> float pixels. Each works eagerly and inside tf.data.

Windows are (offset_y, offset_x, height, width) int32 tensors on the encoded image's grid, so a
JPEG is decoded only inside its window (`decode_and_crop_jpeg`); other formats (PNG, GIF, BMP) are
decoded whole and sliced. A JPEG window at least twice the output size on both sides is decoded at
1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, as PIL's `draft`): the smallest that still holds the
output size, so the resize never enlarges what full scale would not. On 12-megapixel photos that
makes training images 1.5-2.0x and evaluation images ~2.2x faster, and closer to an antialiased
resize than a bilinear resize from full scale (benchmarks/large_photos.py). All randomness is stateless,
seeded per example: the same (seed, example) gives the same crop wherever and whenever it is
computed.
"""

from __future__ import annotations

import tensorflow as tf

from mobilenet_tf.data import augment


JPEG_SCALES = (1, 2, 4, 8)  # the denominators `decode_and_crop_jpeg(ratio=)` accepts


def decode_window(encoded: tf.Tensor, window_fn, min_size=None) -> tf.Tensor:
    """uint8 RGB [h, w, 3] of the window `window_fn(shape)` picks on the image's [h, w, c] shape.

    With `min_size` (height, width), a JPEG window is decoded at the smallest DCT scale 1/r that
    keeps it at least `min_size`: [h // r, w // r, 3].
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        window = window_fn(shape)
        if min_size is None:
            return tf.image.decode_and_crop_jpeg(encoded, tf.stack(window), channels=3)
        y, x, height, width = window
        index = tf.constant(0)
        for i, r in enumerate(JPEG_SCALES[1:], 1):
            index = tf.where((height // r >= min_size[0]) & (width // r >= min_size[1]), i, index)

        def scaled(r):
            def decode():
                # The 1/r image is ceil(H / r) x ceil(W / r); the window keeps its center to half a pixel.
                h, w = height // r, width // r
                top = tf.minimum((2 * y + height - r * h + r) // (2 * r), (shape[0] + r - 1) // r - h)
                left = tf.minimum((2 * x + width - r * w + r) // (2 * r), (shape[1] + r - 1) // r - w)
                return tf.image.decode_and_crop_jpeg(encoded, tf.stack([top, left, h, w]), channels=3, ratio=r)

            return decode

        return tf.switch_case(index, [scaled(r) for r in JPEG_SCALES])

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        y, x, h, w = window_fn(tf.shape(image))
        return image[y : y + h, x : x + w]

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def center_window(shape: tf.Tensor, fraction: float):
    """The central square of `fraction` of the shorter side (the TF/TPU ImageNet eval crop)."""
    height, width = shape[0], shape[1]
    size = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    size = tf.maximum(size, 1)
    return ((height - size + 1) // 2, (width - size + 1) // 2, size, size)


def inception_window(shape, seed, area_range, aspect_range, fallback_fraction=0.875):
    """A random window covering `area_range` of the image with aspect in `aspect_range`.

    Sampled as the Inception/TPU reference does (min_object_covered 0.1, 10 attempts); when every
    attempt fails the sampler returns the whole image, and then the eval center crop is used.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(shape, tf.int32),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    center = center_window(shape, fallback_fraction)
    return tuple(tf.where(failed, c, s) for c, s in zip(center, (begin[0], begin[1], size[0], size[1])))


# How evaluation (and serving) turns an image into the model's pixels (`DataConfig.eval_transform`):
# "crop_bilinear", the TF/TPU ImageNet reference's (the central `crop_fraction` of the shorter side,
# bilinear resize), or timm's (and torchvision's) transform, "timm_bicubic" or "timm_bilinear" (the
# shorter side resized to floor(size / crop_fraction) as PIL resizes, antialiased, then the central
# crop), what timm's checkpoints were evaluated with.
EVAL_TRANSFORMS = ("crop_bilinear", "timm_bicubic", "timm_bilinear")


def resize(image: tf.Tensor, image_size) -> tf.Tensor:
    """float32 [H, W, 3] in 0..255, bilinear (as the reference trainers)."""
    # The same pixels as resizing the uint8 image, but TensorFlow's float kernel is ~1.6x faster.
    return tf.image.resize(tf.cast(image, tf.float32), image_size, method="bilinear")


def timm_eval_pixels(encoded, image_size, crop_fraction, method) -> tf.Tensor:
    """timm's evaluation pixels, float32 0..255: the image resized (antialiased `method`, as PIL
    resizes) so that its shorter side is floor(size / crop_fraction) (torchvision's Resize: the
    longer side in proportion, rounded down; a non-square size: both sides), then the central
    crop (torchvision's CenterCrop: offsets rounded)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    height, width = tf.unstack(tf.shape(image)[:2])
    out_h, out_w = image_size
    if out_h == out_w:
        scale = int(out_h / crop_fraction)
        short, long = tf.minimum(height, width), tf.maximum(height, width)
        scaled_long = tf.cast(scale * tf.cast(long, tf.float64) / tf.cast(short, tf.float64), tf.int32)
        new_h, new_w = tf.where(height <= width, scale, scaled_long), tf.where(height <= width, scaled_long, scale)
    else:
        new_h, new_w = tf.constant(int(out_h / crop_fraction)), tf.constant(int(out_w / crop_fraction))
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method=method, antialias=True)
    # torchvision rounds half to even, as Python's round() and tf.round do.
    top = tf.cast(tf.round(tf.cast(new_h - out_h, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - out_w, tf.float32) / 2), tf.int32)
    return tf.clip_by_value(resized[top:top + out_h, left:left + out_w], 0.0, 255.0)


def normalize(image: tf.Tensor) -> tf.Tensor:
    """0..255 -> [-1, 1], the same arithmetic as the model's `Rescaling(1/127.5, offset=-1)`."""
    return tf.cast(image, tf.float32) * (1.0 / 127.5) - 1.0


def train_image(encoded, seed, image_size, data) -> tf.Tensor:
    """Training pixels in [-1, 1]: Inception crop on the encoded bytes, resize, optional flip,
    optional RandAugment."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = decode_window(
        encoded,
        lambda shape: inception_window(
            shape, crop_seed, data.crop_area_range, data.crop_aspect_range, data.eval_crop_fraction
        ),
        image_size,
    )
    image = resize(image, image_size)
    if data.random_flip:
        # After the resize, which commutes with mirroring (half-pixel centers): the same pixels up to
        # float rounding, and mirroring the float32 output costs a fraction of mirroring the uint8 crop.
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if data.randaugment_ops:  # on the final 0..255 pixels, as RandAugment's ops expect
        augment_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 2)
        image = augment.randaugment(image, augment_seed, data.randaugment_ops, data.randaugment_magnitude)
    return normalize(image)


def eval_pixels(encoded, image_size, crop_fraction, transform="crop_bilinear") -> tf.Tensor:
    """Evaluation pixels in 0..255 (float32) by `transform` (EVAL_TRANSFORMS). Serving uses exactly
    this."""
    if transform != "crop_bilinear":
        return timm_eval_pixels(encoded, image_size, crop_fraction, transform.removeprefix("timm_"))
    image = decode_window(encoded, lambda shape: center_window(shape, crop_fraction), image_size)
    return resize(image, image_size)


def eval_image(encoded, image_size, crop_fraction, transform="crop_bilinear") -> tf.Tensor:
    """Evaluation pixels in [-1, 1]."""
    return normalize(eval_pixels(encoded, image_size, crop_fraction, transform))
