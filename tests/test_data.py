"""Data tests: the digits definition, the record format, preprocessing eager and in tf.data, order."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import paths
from mobilenet_tf.config import DIGITS, DataConfig
from mobilenet_tf.data import digits, pipeline, preprocess, sources, tfrecord

IMAGE_SIZE = (32, 32)


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    return sources.resolve(DataConfig(dataset="digits", cache_dir=cache))


def read_split(info, split):
    """All (encoded, label) of a split in file order."""
    records = tf.data.TFRecordDataset(info.files(split)).map(tfrecord.parse)
    return [(encoded.numpy(), int(label)) for encoded, label in records]


def test_digits_definition(info):
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert info.num_classes == 10
    assert info.counts == {"train": 1437, "validation": 360}
    assert info.class_names == tuple(str(c) for c in range(10))
    validation = read_split(info, "validation")
    assert len(validation) == 360 and len(read_split(info, "train")) == 1437
    # Shard s of a split holds examples s, s + shards, ...; rebuild the validation order.
    shards = [tf.data.TFRecordDataset(f).map(tfrecord.parse) for f in info.files("validation")]
    ordered = [ex for group in zip(*shards) for ex in group]
    indices = np.arange(1797)[np.arange(1797) % 5 == 0]
    for (encoded, label), index in zip(ordered, indices):
        image = tf.io.decode_png(encoded).numpy()
        assert image.shape == (8, 8, 1) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[:, :, 0], np.round(raw.images[index] * 255 / 16).astype(np.uint8))
        assert int(label) == raw.target[index]


def test_digits_png_folders(info):
    root = info.data_dir
    for split, folder, count in (("train", "train", 1437), ("validation", "val", 360)):
        classes = sorted(os.listdir(os.path.join(root, folder)))
        assert classes == [str(c) for c in range(10)]
        assert sum(len(os.listdir(os.path.join(root, folder, c))) for c in classes) == count


def test_materialize_is_reused(info):
    before = os.path.getmtime(os.path.join(info.data_dir, paths.INFO_FILE))
    again = digits.materialize(os.path.dirname(info.data_dir))
    assert again == info.data_dir
    assert os.path.getmtime(os.path.join(again, paths.INFO_FILE)) == before


def test_classic_label_offset(tmp_path):
    """Records labelled 1..N (the TF/TPU ImageNet converters) come out 0..N-1."""
    png = tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)).numpy()
    records = [tfrecord.make_example(png, label=c + 1, height=8, width=8, channels=1, image_format="PNG")
               for c in range(3)]
    tfrecord.write_shard(str(tmp_path / paths.shard_name("validation", 0, 1)), records)
    tfrecord.write_info(str(tmp_path), tfrecord.DatasetInfo(
        name="classic", num_classes=3, class_names=("a", "b", "c"), counts={"validation": 3}, label_offset=1))
    info = tfrecord.read_info(str(tmp_path))
    ds = pipeline.build_dataset(info, DataConfig(), split="validation", global_batch_size=8, image_size=IMAGE_SIZE,
                                training=False)
    labels = np.concatenate([y.numpy() for _, y in ds])
    np.testing.assert_array_equal(labels, [0, 1, 2, -1, -1, -1, -1, -1])  # padded to a whole batch


def _rgb_image(height=40, width=60):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 2 % 256], -1).astype(np.uint8)


def test_decode_window_same_pixels_for_jpeg_and_png():
    """The JPEG path (decode_and_crop_jpeg) and the PNG path (decode then slice) crop alike."""
    image = _rgb_image()
    png = tf.io.encode_png(image)
    window = lambda shape: (tf.constant(5), tf.constant(7), tf.constant(20), tf.constant(30))  # noqa: E731
    np.testing.assert_array_equal(preprocess.decode_window(png, window).numpy(), image[5:25, 7:37])
    jpeg = tf.io.encode_jpeg(image, quality=100)
    full = tf.io.decode_jpeg(jpeg).numpy()
    np.testing.assert_array_equal(preprocess.decode_window(jpeg, window).numpy(), full[5:25, 7:37])


@pytest.mark.parametrize("window, min_size, scale", [
    ((100, 200, 900, 1300), (224, 224), 4),  # 900 // 8 < 224
    ((100, 200, 440, 1300), (224, 224), 1),  # 440 // 2 < 224: full scale
    ((301, 7, 500, 700), (224, 224), 2),
    ((15, 23, 1170, 1560), (128, 128), 8),  # offsets 7 mod 8: flooring them would shift the window by 7
])
def test_large_jpeg_window_decodes_at_dct_scale(window, min_size, scale):
    """The smallest DCT scale that still holds `min_size`, showing the same window as full scale."""
    rng = np.random.default_rng(0)
    scene = tf.image.resize(rng.uniform(0, 255, (1, 24, 32, 3)).astype(np.float32), (1200, 1600), "bicubic")[0]
    jpeg = tf.io.encode_jpeg(np.clip(scene.numpy(), 0, 255).astype(np.uint8), quality=95)
    full = tf.io.decode_jpeg(jpeg).numpy().astype(np.float32)
    y, x, h, w = window
    out = preprocess.decode_window(jpeg, lambda shape: tuple(tf.constant(v) for v in window), min_size).numpy()
    assert out.shape == (h // scale, w // scale, 3)

    def error(dy, dx):  # against the full-scale window, shifted by (dy, dx), area-averaged to out's size
        expected = tf.image.resize(full[y + dy : y + dy + h, x + dx : x + dx + w], out.shape[:2], method="area")
        return np.abs(out - expected.numpy()).mean()

    assert error(0, 0) < 3.0
    # The best-matching shift is within half a decoded pixel, on each axis.
    shifts = np.arange(-scale, scale + 1)
    best_dy = shifts[np.argmin([error(d, 0) for d in shifts])]
    best_dx = shifts[np.argmin([error(0, d) for d in shifts])]
    assert abs(best_dy) <= scale / 2 and abs(best_dx) <= scale / 2, (best_dy, best_dx)


def test_center_window():
    y, x, h, w = (int(v) for v in preprocess.center_window(tf.constant([100, 200, 3]), 0.875))
    assert (h, w) == (87, 87) and (y, x) == (7, 57)


def test_grayscale_becomes_rgb():
    gray = tf.io.encode_png(tf.fill([8, 8, 1], tf.constant(200, tf.uint8)))
    pixels = preprocess.eval_pixels(gray, IMAGE_SIZE, 1.0).numpy()
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels, 200.0)


@pytest.mark.parametrize("encode", [tf.io.encode_png, lambda im: tf.io.encode_jpeg(im, quality=95)])
def test_train_image_eager_equals_tf_data(encode):
    encoded = encode(_rgb_image(120, 90))
    data = DataConfig()
    seeds = [tf.constant([3, i], tf.int64) for i in range(6)]
    eager = [preprocess.train_image(encoded, s, IMAGE_SIZE, data).numpy() for s in seeds]
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(
        lambda s: preprocess.train_image(encoded, s, IMAGE_SIZE, data), num_parallel_calls=2)
    for a, b in zip(eager, ds):
        np.testing.assert_array_equal(a, b.numpy())
        assert a.shape == (32, 32, 3) and a.min() >= -1.0 and a.max() <= 1.0
    # Different seeds give different crops.
    assert len({a.tobytes() for a in eager}) > 1


def test_random_flip_mirrors_the_unflipped_crop():
    """With the flip on, each image is the same seed's unflipped image or its mirror, and both occur."""
    encoded = tf.io.encode_jpeg(_rgb_image(120, 90), quality=95)
    flips = []
    for i in range(40):
        seed = tf.constant([5, i], tf.int64)
        plain = preprocess.train_image(encoded, seed, IMAGE_SIZE, DataConfig(random_flip=False)).numpy()
        image = preprocess.train_image(encoded, seed, IMAGE_SIZE, DataConfig(random_flip=True)).numpy()
        same, mirrored = np.abs(image - plain).max(), np.abs(image - plain[:, ::-1]).max()
        assert min(same, mirrored) < 1e-5, (same, mirrored)
        if max(same, mirrored) > 0.05:  # a crop that is (nearly) symmetric tells nothing
            flips.append(bool(mirrored < same))
    assert len(flips) >= 30 and 8 <= sum(flips) <= len(flips) - 8, flips

def test_inception_window_in_bounds_and_area():
    shape = tf.constant([300, 400, 3])
    areas = []
    for i in range(200):
        y, x, h, w = (int(v) for v in preprocess.inception_window(shape, tf.constant([1, i]), (0.08, 1.0), (3 / 4, 4 / 3)))
        assert 0 <= y and 0 <= x and y + h <= 300 and x + w <= 400 and h > 0 and w > 0
        areas.append(h * w / (300 * 400))
    assert min(areas) < 0.3 and max(areas) > 0.7


def test_eval_image_eager_equals_tf_data(info):
    encoded, _ = read_split(info, "validation")[0]
    eager = preprocess.eval_image(encoded, IMAGE_SIZE, 1.0).numpy()
    in_data = next(iter(tf.data.Dataset.from_tensors(encoded).map(lambda e: preprocess.eval_image(e, IMAGE_SIZE, 1.0))))
    np.testing.assert_array_equal(eager, in_data.numpy())


def _batches(info, **kwargs):
    ds = pipeline.build_dataset(info, DIGITS.data, split="train", global_batch_size=64, image_size=IMAGE_SIZE,
                                training=True, seed=7, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_training_order_is_a_function_of_seed_and_epoch(info):
    full = _batches(info, epochs=(0, 2))
    steps = 1437 // 64
    assert len(full) == 2 * steps
    assert all(x.shape == (64, 32, 32, 3) for x, _ in full)
    # The same run again is identical; epochs differ from each other.
    again = _batches(info, epochs=(0, 2))
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(full, again))
    assert not (full[0][1] == full[steps][1]).all()
    # Resuming at epoch 1, step 5 replays exactly what the full run saw from there.
    resumed = _batches(info, epochs=(1, 2), skip_steps=5)
    assert len(resumed) == steps - 5
    for a, b in zip(full[steps + 5:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_every_epoch_sees_each_example_once(info):
    labels = np.concatenate([y for _, y in _batches(info, epochs=(0, 1))])
    # 1437 // 64 * 64 = 1408 examples, no repeats: the label histogram is within the split's.
    split_counts = np.bincount([label for _, label in read_split(info, "train")], minlength=10)
    assert len(labels) == 1408
    assert (np.bincount(labels, minlength=10) <= split_counts).all()


def test_eval_dataset_is_whole_split_padded(info):
    ds = pipeline.build_dataset(info, DIGITS.data, split="validation", global_batch_size=64, image_size=IMAGE_SIZE,
                                training=False)
    batches = [y.numpy() for _, y in ds]
    assert [len(b) for b in batches] == [64] * 6  # 360 padded to whole batches with label -1
    labels = np.concatenate(batches)
    assert (labels[360:] == -1).all()
    labels = labels[:360]
    np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                  np.bincount([label for _, label in read_split(info, "validation")], minlength=10))


def _numbered_records(directory, num_examples, num_shards):
    """Records whose label is the example's number (0..n-1), in `num_shards` train and validation
    shards: a label identifies the example wherever it ends up."""
    jpeg = tf.io.encode_jpeg(tf.fill([40, 48, 3], tf.constant(128, tf.uint8))).numpy()
    records = [tfrecord.make_example(jpeg, label=i, height=40, width=48, channels=3, image_format="JPEG")
               for i in range(num_examples)]
    for split in ("train", "validation"):
        for s in range(num_shards):
            tfrecord.write_shard(os.path.join(directory, paths.shard_name(split, s, num_shards)),
                                 records[s::num_shards])
    info = tfrecord.DatasetInfo(name="numbered", num_classes=num_examples,
                                class_names=tuple(map(str, range(num_examples))),
                                counts={"train": num_examples, "validation": num_examples})
    tfrecord.write_info(str(directory), info)
    return tfrecord.read_info(str(directory))


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("num_shards", [4, 1])  # by file; fewer files than pipelines: by record
def test_input_pipelines_split_each_epoch_without_overlap(tmp_path, num_shards, cache):
    info = _numbered_records(tmp_path, 40, num_shards)
    data = DataConfig(dataset="numbered", shuffle_buffer=16, cache=cache)

    def labels(training, pipeline_id, epochs=(0, 1), num_pipelines=2):
        context = tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=num_pipelines)
        ds = pipeline.build_dataset(info, data, split="train" if training else "validation", global_batch_size=8,
                                    image_size=IMAGE_SIZE, training=training, seed=3, epochs=epochs,
                                    input_context=context)
        batches = [y.numpy() for _, y in ds]
        assert {len(b) for b in batches} == {8 // num_pipelines}  # the per-replica batch
        return np.concatenate(batches)

    assert sorted(labels(True, 0, num_pipelines=1)) == list(range(40))  # one pipeline: the whole epoch

    for epoch in (0, 1):
        first, second = labels(True, 0, (epoch, epoch + 1)), labels(True, 1, (epoch, epoch + 1))
        assert len(first) == len(second) == 20  # 5 steps of 4 on each pipeline
        assert sorted(np.concatenate([first, second])) == list(range(40))  # disjoint, all of the epoch
    # Each epoch is shuffled anew, and a second epoch continues the same pipeline.
    assert list(labels(True, 0, (0, 1))) != list(labels(True, 0, (1, 2)))
    both = labels(True, 0, (0, 2))
    np.testing.assert_array_equal(both, np.concatenate([labels(True, 0, (0, 1)), labels(True, 0, (1, 2))]))

    # Evaluation: the same number of whole batches on both pipelines, each example exactly once.
    first, second = labels(False, 0), labels(False, 1)
    assert len(first) == len(second)
    seen = np.concatenate([first, second])
    assert sorted(seen[seen >= 0]) == list(range(40))
