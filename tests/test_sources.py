"""Data sources: classic 1-based records, --label_offset, folder:DIR, tfds:NAME[:VERSION] (built here, and a
download with no network refused in one line)."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import imagenet_like
from mobilenet_tf import config, flags, paths
from mobilenet_tf.config import DataConfig
from mobilenet_tf.data import pipeline, sources, tfrecord

IMAGE_SIZE = (32, 32)
TFDS_NAME = "mobilenet_tf_test_shapes"
from clis import env_for, one_error_line, run


def labels_of(info, split="validation", data=None):
    ds = pipeline.build_dataset(info, data or DataConfig(), split=split, global_batch_size=64, image_size=IMAGE_SIZE,
                                training=False)
    labels = np.concatenate([y.numpy() for _, y in ds])
    return labels[labels >= 0]  # evaluation pads to whole batches with label -1


# --- tfrecord:DIR, classic records and --label_offset -------------------------------------------------


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    """Records as the TF/TPU ImageNet converters wrote them: labels 1..1000 (0 unused), no dataset_info.json."""
    root = tmp_path_factory.mktemp("classic")
    jpeg = imagenet_like.jpeg(np.full((8, 8, 3), 128, np.uint8))
    for split, shards, copies in (("train", 2, 2), ("validation", 1, 1)):
        records = [tfrecord.make_example(jpeg, label=c + 1, height=8, width=8, channels=3, image_format="JPEG",
                                         synset=f"n{c:08d}", text=f"class {c}")
                   for _ in range(copies) for c in range(1000)]
        for s in range(shards):
            tfrecord.write_shard(str(root / paths.shard_name(split, s, shards)), records[s::shards])
    return root


def test_classic_records_need_label_offset(classic, tmp_path):
    spec = f"tfrecord:{classic}"
    problem = sources.check_spec(spec, DataConfig(dataset=spec, cache_dir=str(tmp_path)))
    assert problem == (f"{classic} has no dataset_info.json (its labels run 1..1000): give --label_offset, 1 for the "
                       f"TF/TPU ImageNet converters' records (labels 1..1000, 0 unused), 0 for labels from 0")
    problem = sources.check_spec(spec, DataConfig(dataset=spec, cache_dir=str(tmp_path), label_offset=0))
    assert problem == (f"--label_offset=0: no record in {classic} is labelled 0 (its labels run 1..1000), so class 0 "
                       f"would never be seen; use --label_offset=1")
    problem = sources.check_spec(spec, DataConfig(dataset=spec, cache_dir=str(tmp_path), label_offset=2))
    assert problem.startswith("--label_offset=2: ") and "labelled 1, which would become -1" in problem
    # The flags pass (the records are there: reading their labels waits for TensorFlow); resolving the
    # data set, which every command does first, is refused in one line naming --dataset.
    cfg = config.replace(config.DIGITS, data={"dataset": spec, "cache_dir": str(tmp_path), "label_offset": 0})
    flags.validate(cfg)
    with pytest.raises(tfrecord.SourceError, match=rf"^--dataset={re.escape(spec)}: --label_offset=0: no record"):
        sources.resolve(cfg.data)


def test_classic_records_come_out_0_to_999(classic, tmp_path):
    data = DataConfig(dataset=f"tfrecord:{classic}", cache_dir=str(tmp_path), label_offset=1)
    assert sources.check_spec(data.dataset, data) is None
    info = sources.resolve(data)
    assert info.num_classes == 1000 and info.label_offset == 1
    assert info.counts == {"train": 2000, "validation": 1000}
    assert info.class_names[:2] == ("class 0", "class 1") and info.synsets[999] == "n00000999"
    np.testing.assert_array_equal(np.sort(labels_of(info)), np.arange(1000))
    ds = pipeline.build_dataset(info, data, split="train", global_batch_size=500, image_size=IMAGE_SIZE, training=True)
    train_labels = np.concatenate([y.numpy() for _, y in ds])
    assert len(train_labels) == 2000 and train_labels.min() == 0 and train_labels.max() == 999
    # The scan is cached: a second resolve reads it back.
    assert len(os.listdir(tmp_path / "tfrecord-scans")) == 1
    assert sources.resolve(data) == info


def test_label_offset_overrides_dataset_info(tmp_path):
    png = tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)).numpy()
    records = [tfrecord.make_example(png, label=c + 1, height=8, width=8, channels=1, image_format="PNG")
               for c in range(3)]
    tfrecord.write_shard(str(tmp_path / paths.shard_name("validation", 0, 1)), records)
    tfrecord.write_info(str(tmp_path), tfrecord.DatasetInfo(name="x", num_classes=3, class_names=("a", "b", "c"),
                                                            counts={"validation": 3}))
    data = DataConfig(dataset=f"tfrecord:{tmp_path}", label_offset=1)
    np.testing.assert_array_equal(labels_of(sources.resolve(data)), [0, 1, 2])
    assert sources.check_spec("digits", DataConfig(label_offset=1)).startswith("--label_offset=1: applies to tfrecord")


def test_dataset_info_without_new_fields_still_reads(tmp_path):
    """dataset_info.json files written before `keys` and `split_files` existed."""
    (tmp_path / "dataset_info.json").write_text(
        '{"name": "old", "num_classes": 2, "class_names": ["a", "b"], "counts": {"train": 4}, "label_offset": 1}')
    info = tfrecord.read_info(str(tmp_path))
    assert info.keys == tfrecord.KEYS and info.split_files == {} and info.label_offset == 1


# --- folder:DIR -------------------------------------------------------------------------------------


def test_folder_dataset_converts_once_into_the_cache(tmp_path):
    root = tmp_path / "flowers"
    imagenet_like.make_folders(root, counts=(10, 6, 4))
    data = DataConfig(dataset=f"folder:{root}", cache_dir=str(tmp_path / "cache"), validation_fraction=0.25)
    assert sources.check_spec(data.dataset, data) is None
    info = sources.resolve(data)
    assert info.counts == {"train": 15, "validation": 5} and info.class_names == ("class_0", "class_1", "class_2")
    assert info.data_dir.startswith(str(tmp_path / "cache" / "folders" / "flowers-"))
    np.testing.assert_array_equal(np.bincount(labels_of(info), minlength=3), [2, 2, 1])
    shards = {f: os.stat(f).st_mtime_ns for f in info.files("train") + info.files("validation")}
    # Again: nothing rewritten. A new image: only its shard.
    assert sources.resolve(data).counts == info.counts
    assert {f: os.stat(f).st_mtime_ns for f in shards} == shards
    imagenet_like.write(str(root / "class_2" / "zzz.jpg"), imagenet_like.jpeg(imagenet_like.pattern(30, 30, 50)))
    again = sources.resolve(data)
    assert sum(again.counts.values()) == 21 and again.data_dir == info.data_dir


def test_folder_dataset_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    for spec, data, expected in (
        (f"folder:{tmp_path / 'empty'}", {},
         "no class subfolders (expected DIR/<class>/<images>, or DIR/train/<class>/ and DIR/val/<class>/)"),
        (f"folder:{tmp_path / 'missing'}", {}, "no such directory"),
        ("folder:", {}, "--dataset=folder:DIR needs the directory of class folders"),
    ):
        assert sources.check_spec(spec, DataConfig(dataset=spec, **data)) == expected
    imagenet_like.make_folders(tmp_path / "few", counts=(2, 2))
    spec = f"folder:{tmp_path / 'few'}"
    assert sources.check_spec(spec, DataConfig(dataset=spec, validation_fraction=0.0)).startswith("no held-out images")


# --- tfds:NAME[:VERSION] ----------------------------------------------------------------------------


class MobilenetTfTestShapes(tfds.core.GeneratorBasedBuilder):
    """30 training and 9 test images in 3 classes; PNG (TFDS's default) of varying sizes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["circle", "square", "triangle"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0), "test": self._generate_examples(9, 100)}

    def _generate_examples(self, count, start):
        for i in range(count):
            yield i, {"image": imagenet_like.pattern(20 + i % 5, 28, start + i), "label": (start + i) % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    MobilenetTfTestShapes(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


@pytest.mark.parametrize("arg", [TFDS_NAME, f"{TFDS_NAME}:1.0.0"])
def test_tfds_source(tfds_dir, arg):
    data = DataConfig(dataset=f"tfds:{arg}", tfds_data_dir=str(tfds_dir))
    assert sources.check_spec(data.dataset, data) is None
    info = sources.resolve(data)
    assert info.name == TFDS_NAME and info.num_classes == 3
    assert info.class_names == ("circle", "square", "triangle")
    assert info.counts == {"train": 30, "validation": 9} and info.keys == ("image", "label")
    expected = sorted((100 + i) % 3 for i in range(9))
    np.testing.assert_array_equal(np.sort(labels_of(info)), expected)
    builder = tfds.builder(arg, data_dir=str(tfds_dir))
    theirs = [int(y) for _, y in builder.as_dataset(split="test", as_supervised=True, shuffle_files=False)]
    np.testing.assert_array_equal(labels_of(info), theirs)  # same files, same order
    ds = pipeline.build_dataset(info, DataConfig(), split="train", global_batch_size=8, image_size=IMAGE_SIZE,
                                training=True, epochs=(0, 2))
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(batches) == 2 * (30 // 8) and batches[0][0].shape == (8, 32, 32, 3)


def test_tfds_errors(tfds_dir):
    problem = sources.check_spec("tfds:no_such_set_xyz", DataConfig(tfds_data_dir=str(tfds_dir)))
    assert problem.startswith(f"no TFDS data set no_such_set_xyz in --tfds_data_dir={tfds_dir} or the TFDS catalog")
    problem = sources.check_spec(f"tfds:{TFDS_NAME}:9.9.9", DataConfig(tfds_data_dir=str(tfds_dir)))
    assert problem.startswith(f"no TFDS data set {TFDS_NAME}:9.9.9 in --tfds_data_dir={tfds_dir}")
    assert sources.check_spec("tfds:", DataConfig()).startswith("--dataset=tfds:NAME needs a TFDS data set name")
    problem = sources.check_spec("tfds:imagenet2012", DataConfig(tfds_data_dir=str(tfds_dir)))
    assert problem.startswith(f"imagenet2012 is not prepared and must be downloaded by hand into "
                              f"{tfds_dir}/downloads/manual (--tfds_data_dir={tfds_dir}): ")
    assert "ILSVRC2012_img_train.tar" in problem


@pytest.mark.slow
def test_train_cli_on_tfds_and_folder(tfds_dir, tmp_path):
    """`mobilenet-train --dataset=tfds:NAME` in a fresh process (the builder is read from its files),
    and `--dataset=folder:DIR`, each one short epoch with evaluation and export."""
    common = ["--epochs=1", "--batch_size=8", "--image_size=32", "--alpha=0.35", "--log_steps=0"]
    result = run("train", f"--dataset=tfds:{TFDS_NAME}", f"--tfds_data_dir={tfds_dir}", f"--model_dir={tmp_path / 'a'}",
                       *common, cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"held-out top-1 [0-9.]+\s+top-5 [0-9.]+\s+\(9 images\)", result.stdout), result.stdout
    assert (tmp_path / "a" / "export" / "1" / "assets" / "labels.txt").read_text().split() == ["circle", "square",
                                                                                                "triangle"]
    imagenet_like.make_folders(tmp_path / "flowers", counts=(12, 8))
    result = run("train", f"--dataset=folder:{tmp_path / 'flowers'}", "--validation_fraction=0.25",
                       f"--model_dir={tmp_path / 'b'}", *common, cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\(5 images\)", result.stdout), result.stdout
    result = run("train", "--dataset=tfds:no_such_set_xyz", f"--tfds_data_dir={tfds_dir}", *common,
                       cache_dir=tmp_path / "cache")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "mobilenet-train: error: --dataset=tfds:no_such_set_xyz: no TFDS data set no_such_set_xyz")


@pytest.mark.slow  # TFDS retries its downloads for ~3 minutes before giving up
def test_offline_tfds_download_fails_in_one_line(tmp_path, cache_dir):
    env = env_for(cache_dir, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    result = run("train", "--dataset=tfds:mnist", f"--tfds_data_dir={tmp_path / 'tfds'}",
                 f"--model_dir={tmp_path / 'run'}", cache_dir=cache_dir, env=env)
    line = one_error_line(result, "train")
    assert "cannot prepare mnist" in line and "--tfds_data_dir=DIR" in line, line
