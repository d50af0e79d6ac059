"""mobilenet-convert: ImageNet and folder layouts -> shards + dataset_info.json, hazards, determinism, resume."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import imagenet_like
from images import encode_bmp, encode_gif
from imagenet_like import HAZARDS, TEXTS, VAL_LABELS, WNIDS
from mobilenet_tf import paths
from mobilenet_tf.data import convert, tfrecord
from mobilenet_tf.data.plan import ConvertError, plan_folder, plan_imagenet

SHARDS = {"train": 3, "validation": 2}
GOOD_TRAIN = len(WNIDS) * imagenet_like.TRAIN_PER_CLASS + sum(reason is None for reason in HAZARDS.values())
from clis import run


def read_records(path):
    """Every feature of every record of a shard, as Python values."""
    out = []
    for record in tf.data.TFRecordDataset([path]):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        out.append({k: (v.int64_list.value[0] if v.HasField("int64_list") else v.bytes_list.value[0])
                    for k, v in feature.items()})
    return out


def shard_bytes(directory):
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory)) if re.fullmatch(r"\w+-\d{5}-of-\d{5}", name)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ILSVRC")
    return root, imagenet_like.make_imagenet(root)


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    """The CLI as users run it, with two worker processes."""
    root, inputs = tree
    out = tmp_path_factory.mktemp("imagenet_records")
    result = run("convert", f"--input_dir={root}", f"--output_dir={out}",
                         f"--validation_labels={inputs['validation_labels']}", f"--synset_words={inputs['synset_words']}",
                         "--train_shards=3", "--validation_shards=2", "--num_workers=2")
    return out, result


# --- One image --------------------------------------------------------------------------------------


def test_encode_image_keeps_rgb_jpeg_bytes():
    data = imagenet_like.jpeg(imagenet_like.pattern(40, 56, 1))
    assert convert.encode_image(data) == (data, "JPEG", 40, 56)


def test_encode_image_reencodes_cmyk_png_and_gray_as_rgb():
    cmyk = imagenet_like.hazard_bytes("n01440764_cmyk.JPEG")
    assert tf.image.extract_jpeg_shape(cmyk).numpy().tolist() == [16, 24, 4]
    encoded, fmt, height, width = convert.encode_image(cmyk)
    assert (fmt, height, width) == ("JPEG", 16, 24)
    assert tf.image.extract_jpeg_shape(encoded).numpy().tolist() == [16, 24, 3]
    np.testing.assert_allclose(tf.io.decode_jpeg(encoded).numpy().reshape(-1, 3).mean(0), [255, 100, 0], atol=3)

    png = imagenet_like.hazard_bytes("n01440764_png.JPEG")
    encoded, fmt, height, width = convert.encode_image(png)
    assert (fmt, height, width) == ("JPEG", 20, 30) and tf.io.is_jpeg(encoded)
    error = tf.io.decode_jpeg(encoded).numpy().astype(int) - imagenet_like.pattern(20, 30, 7)
    assert np.abs(error).mean() < 8  # the PNG's pixels, through JPEG

    gray = imagenet_like.hazard_bytes("n01440764_gray.JPEG")
    assert tf.image.extract_jpeg_shape(gray).numpy()[2] == 1
    encoded, fmt, _, _ = convert.encode_image(gray)
    pixels = tf.io.decode_jpeg(encoded).numpy()
    assert fmt == "JPEG" and pixels.shape == (32, 40, 3)
    np.testing.assert_allclose(pixels[..., 0], pixels[..., 2], atol=2)


def test_encode_image_lossless_inputs_stay_lossless():
    """Folders: PNG, GIF and BMP become RGB PNGs with the same pixels (gray becomes RGB)."""
    rgb = imagenet_like.pattern(12, 20, 2)
    gray = rgb[:, :, 0]
    for data, expected in ((tf.io.encode_png(rgb).numpy(), rgb), (encode_bmp(rgb), rgb),
                           (tf.io.encode_png(gray[:, :, None]).numpy(), np.repeat(gray[:, :, None], 3, 2)),
                           (encode_gif(gray), np.repeat(gray[:, :, None], 3, 2))):
        encoded, fmt, height, width = convert.encode_image(data, lossless=True)
        assert (fmt, height, width) == ("PNG", 12, 20)
        np.testing.assert_array_equal(tf.io.decode_png(encoded).numpy(), expected)


@pytest.mark.parametrize("name", [n for n, reason in HAZARDS.items() if reason])
def test_encode_image_skips_broken_files_with_a_reason(name):
    with pytest.raises(convert.SkipImage) as error:
        convert.encode_image(imagenet_like.hazard_bytes(name))
    reason = HAZARDS[name]
    assert str(error.value).startswith(reason.split(" (")[0]), str(error.value)


def test_jpeg_header_agrees_with_tensorflow():
    image = imagenet_like.pattern(40, 56, 3)
    exif = b"\xff\xe1" + (2 + 30).to_bytes(2, "big") + b"Exif\0\0" + bytes(24)  # an APP1 segment first
    plain = imagenet_like.jpeg(image)
    for data in (plain, plain[:2] + exif + plain[2:], tf.io.encode_jpeg(image, progressive=True).numpy(),
                 tf.io.encode_jpeg(image, optimize_size=True, chroma_downsampling=False).numpy(),
                 imagenet_like.hazard_bytes("n01440764_gray.JPEG"), imagenet_like.hazard_bytes("n01440764_cmyk.JPEG")):
        assert convert.jpeg_header(data) == tuple(tf.image.extract_jpeg_shape(data).numpy().tolist())
    assert convert.jpeg_header(b"\xff\xd8\xff\xe0junk") is None
    progressive = tf.io.encode_jpeg(image, progressive=True).numpy()
    assert convert.encode_image(progressive) == (progressive, "JPEG", 40, 56)
    with pytest.raises(convert.SkipImage, match="^truncated JPEG$"):
        convert.encode_image(progressive[: len(progressive) * 2 // 3])


def test_truncated_png_is_named_so():
    png = tf.io.encode_png(imagenet_like.pattern(30, 30, 1)).numpy()
    with pytest.raises(convert.SkipImage, match="^truncated PNG$"):
        convert.encode_image(png[: len(png) // 2])


# --- ImageNet through the CLI -------------------------------------------------------------------------


def test_imagenet_cli_writes_shards_and_info(converted):
    out, result = converted
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == [".convert", "dataset_info.json", "train-00000-of-00003", "train-00001-of-00003",
                                       "train-00002-of-00003", "validation-00000-of-00002", "validation-00001-of-00002"]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["name"] == "imagenet" and info["num_classes"] == 3 and info["label_offset"] == 0
    assert info["synsets"] == list(WNIDS) and info["class_names"] == list(TEXTS)
    assert info["counts"] == {"train": GOOD_TRAIN, "validation": len(VAL_LABELS)} == {"train": 21, "validation": 5}
    skipped = {s["file"]: s["reason"] for s in info["skipped"]}
    expected = {f"train/{WNIDS[0]}/{name}": reason for name, reason in HAZARDS.items() if reason}
    expected["val/ILSVRC2012_val_00000006.JPEG"] = "no label in LOC_val_solution.csv"
    assert sorted(skipped) == sorted(expected) == [s["file"] for s in info["skipped"]]
    for file, reason in expected.items():
        assert skipped[file].startswith(reason.split(" (")[0]), (file, skipped[file])
    assert f"Wrote {GOOD_TRAIN} train, 5 validation records of 3 classes" in result.stdout
    assert "5 files skipped" in result.stdout
    # The progress bar's last line, and each skip on its own line.
    assert re.search(r"30/30 images \[=+\] \d+ img/s ETA 0s", result.stderr), result.stderr[-2000:]
    assert "skipped train/n01440764/n01440764_empty.JPEG: empty file" in result.stderr


def test_imagenet_records(converted, tree):
    out, _ = converted
    root, _ = tree
    train = [r for s in range(3) for r in read_records(out / paths.shard_name("train", s, 3))]
    validation = [r for s in range(2) for r in read_records(out / paths.shard_name("validation", s, 2))]
    assert len(train) == GOOD_TRAIN and len(validation) == 5
    expected_train = {f"{w}_{i}.JPEG" for w in WNIDS for i in range(imagenet_like.TRAIN_PER_CLASS)}
    expected_train |= {name for name, reason in HAZARDS.items() if reason is None}
    assert {r["image/filename"].decode() for r in train} == expected_train
    for record in train + validation:
        name, label = record["image/filename"].decode(), record["image/class/label"]
        expected_label = VAL_LABELS[int(name[15:23]) - 1] if name.startswith("ILSVRC") else WNIDS.index(name[:9])
        assert label == expected_label, name
        assert record["image/class/synset"].decode() == WNIDS[label]
        assert record["image/class/text"].decode() == TEXTS[label]
        assert record["image/format"] == b"JPEG" and record["image/channels"] == 3
        encoded = record["image/encoded"]
        shape = [record["image/height"], record["image/width"], 3]
        assert tf.image.extract_jpeg_shape(encoded).numpy().tolist() == shape
        folder = "val" if name.startswith("ILSVRC") else f"train/{name[:9]}"
        original = (root / folder / name).read_bytes()
        if name not in HAZARDS:
            assert encoded == original  # RGB JPEGs are copied byte for byte
    # The fixed-seed shuffle spreads the classes over the shards.
    for s in range(3):
        labels = {r["image/class/label"] for r in read_records(out / paths.shard_name("train", s, 3))}
        assert len(labels) >= 2


def test_second_run_is_byte_identical(converted, tree, tmp_path):
    """Two workers (the CLI) and one thread here: the same bytes. Another seed: another order."""
    out, _ = converted
    root, inputs = tree
    plan = plan_imagenet(str(root), **inputs)
    convert.write(plan, str(tmp_path / "again"), shards=SHARDS)
    assert shard_bytes(tmp_path / "again") == shard_bytes(out)
    assert (tmp_path / "again" / "dataset_info.json").read_text() == (out / "dataset_info.json").read_text()
    other = plan_imagenet(str(root), seed=1, **inputs)
    convert.write(other, str(tmp_path / "seed1"), shards=SHARDS)
    first, second = shard_bytes(out), shard_bytes(tmp_path / "seed1")
    assert first["train-00000-of-00003"] != second["train-00000-of-00003"]
    records = lambda d: sorted(r["image/filename"] for n in shard_bytes(d) for r in read_records(d / n))  # noqa: E731
    assert records(out) == records(tmp_path / "seed1")


def test_resume_rewrites_only_missing_or_changed_shards(tree, tmp_path):
    root, inputs = tree
    plan = plan_imagenet(str(root), **inputs)
    out = tmp_path / "out"
    convert.write(plan, str(out), shards=SHARDS)
    before = shard_bytes(out)
    mtimes = {name: os.stat(out / name).st_mtime_ns for name in before}
    # An interrupted run: one shard missing, a temporary file left behind.
    os.remove(out / "train-00001-of-00003")
    (out / "train-00002-of-00003.tmp-12345").write_bytes(b"partial")
    calls = []
    convert.write(plan, str(out), shards=SHARDS, progress=lambda done, total: calls.append((done, total)))
    missing = len(plan.splits["train"][len(plan.splits["train"]) // 3 : 2 * len(plan.splits["train"]) // 3])
    assert calls[0][0] == 30 - missing and calls[-1] == (30, 30)  # complete shards count as done from the start
    assert shard_bytes(out) == before
    assert sorted(os.listdir(out)) == sorted([*before, "dataset_info.json", ".convert"])
    assert {n: os.stat(out / n).st_mtime_ns for n in before if n != "train-00001-of-00003"} == \
        {n: t for n, t in mtimes.items() if n != "train-00001-of-00003"}
    # A different shard count replaces the old shards of that split.
    convert.write(plan, str(out), shards={"train": 2, "validation": 2})
    train_shards = sorted(n for n in os.listdir(out) if n.startswith("train"))
    assert train_shards == ["train-00000-of-00002", "train-00001-of-00002"]
    assert tfrecord.read_info(str(out)).counts == {"train": 21, "validation": 5}


def test_changed_input_rewrites_its_shard(tmp_path):
    root = tmp_path / "ILSVRC"
    inputs = imagenet_like.make_imagenet(root, hazards=False)
    out = tmp_path / "out"
    convert.write(plan_imagenet(str(root), **inputs), str(out), shards=SHARDS)
    before = {n: os.stat(out / n).st_mtime_ns for n in shard_bytes(out)}
    changed = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    changed.write_bytes(imagenet_like.jpeg(imagenet_like.pattern(40, 40, 99)))
    plan = plan_imagenet(str(root), **inputs)
    convert.write(plan, str(out), shards=SHARDS)
    after = {n: os.stat(out / n).st_mtime_ns for n in shard_bytes(out)}
    rewritten = [n for n in before if after[n] != before[n]]
    assert len(rewritten) == 1 and rewritten[0].startswith("train")
    assert changed.name in {r["image/filename"].decode() for r in read_records(out / rewritten[0])}


def test_strict_stops_at_the_first_skip(tree, tmp_path):
    root, inputs = tree
    with pytest.raises(ConvertError, match=r"^--strict: val/ILSVRC2012_val_00000006.JPEG: no label"):
        convert.write(plan_imagenet(str(root), **inputs), str(tmp_path / "a"), shards=SHARDS, strict=True)
    flat = tmp_path / "ILSVRC"
    imagenet_like.make_imagenet(flat, flat_val=False)
    result = run("convert", f"--input_dir={flat}", f"--output_dir={tmp_path / 'b'}", "--strict", "--num_workers=1",
                         "--train_shards=2", "--validation_shards=1")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"mobilenet-convert: error: --strict: train/n01440764/n01440764_\w+\.JPEG: "
                        r"(empty file|truncated JPEG|corrupt JPEG \(.*\)|not an image)", last), last
    assert not os.path.exists(tmp_path / "b" / "dataset_info.json")


def test_cli_errors_are_one_line(tree, tmp_path):
    root, _ = tree
    result = run("convert", f"--output_dir={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "mobilenet-convert: error: --input_dir is required"
    result = run("convert", f"--input_dir={root}", f"--output_dir={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mobilenet-convert: error: --input_dir={root}: val/ holds the images flat; give their labels with "
        f"--validation_labels=LOC_val_solution.csv")
    assert not os.listdir(tmp_path)


def test_plan_errors_name_the_flag(tree, tmp_path):
    root, inputs = tree
    with pytest.raises(ConvertError, match=r"^--input_dir=/nonexistent: no such directory$"):
        plan_imagenet("/nonexistent")
    plan = plan_imagenet(str(root), **inputs)
    with pytest.raises(ConvertError, match=r"^--train_shards=26: must be between 1 and the 25 train files$"):
        convert.write(plan, str(tmp_path), shards={"train": 26, "validation": 1})
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{WNIDS[0]} tench\n")
    with pytest.raises(ConvertError, match=rf"^--synset_words={mapping}: no line for {WNIDS[1]} \(2 of the 3"):
        plan_imagenet(str(root), synset_words=str(mapping), validation_labels=inputs["validation_labels"])
    with pytest.raises(ConvertError, match="expected the header ImageId,PredictionString"):
        plan_imagenet(str(root), validation_labels=str(mapping.rename(tmp_path / "bad.csv")))


def test_validation_layouts(tmp_path):
    """val/<wnid>/ folders need no label file; the TF converters' one-wnid-per-line file works too."""
    root = tmp_path / "ILSVRC"
    imagenet_like.make_imagenet(root, flat_val=False, hazards=False)
    plan = plan_imagenet(str(root))
    assert sorted(it.label for it in plan.splits["validation"]) == sorted(VAL_LABELS)
    assert plan.class_names == WNIDS  # no --synset_words: the wnids name the classes
    flat = tmp_path / "flat"
    imagenet_like.make_imagenet(flat, hazards=False)
    labels = tmp_path / "imagenet_2012_validation_synset_labels.txt"
    labels.write_text("".join(f"{WNIDS[c]}\n" for c in VAL_LABELS + (0,)))
    plan = plan_imagenet(str(flat), validation_labels=str(labels))
    by_name = {os.path.basename(it.file): it.label for it in plan.splits["validation"]}
    assert by_name == {f"ILSVRC2012_val_{i + 1:08d}.JPEG": c for i, c in enumerate(VAL_LABELS + (0,))}


# --- Folders ----------------------------------------------------------------------------------------


def test_folder_split_is_per_class_and_seeded(tmp_path):
    classes = imagenet_like.make_folders(tmp_path / "flowers", counts=(5, 8, 3))
    plan = plan_folder(str(tmp_path / "flowers"), validation_fraction=0.25, seed=0)
    assert plan.name == "flowers" and plan.synsets == tuple(classes) and plan.lossless
    per_class = lambda split: np.bincount([it.label for it in plan.splits[split]], minlength=3).tolist()  # noqa: E731
    assert per_class("validation") == [1, 2, 1] and per_class("train") == [4, 6, 2]
    files = lambda p, split: sorted(it.file for it in p.splits[split])  # noqa: E731
    again = plan_folder(str(tmp_path / "flowers"), validation_fraction=0.25, seed=0)
    assert files(again, "validation") == files(plan, "validation")
    others = [plan_folder(str(tmp_path / "flowers"), validation_fraction=0.25, seed=s) for s in (1, 2, 3)]
    assert any(files(o, "validation") != files(plan, "validation") for o in others)
    for item in plan.splits["train"] + plan.splits["validation"]:
        assert item.file.startswith(classes[item.label] + os.sep)
    assert "validation" not in plan_folder(str(tmp_path / "flowers"), validation_fraction=0).splits
    with pytest.raises(ConvertError, match="holds out no image"):
        plan_folder(str(tmp_path / "flowers"), validation_fraction=0.05)


def test_folder_train_val_layout_from_the_cli(tmp_path):
    """DIR/train/<class> and DIR/val/<class> as given; PNGs stay PNG, pixel for pixel."""
    imagenet_like.make_folders(tmp_path / "data" / "train", counts=(3, 4), png=True)
    imagenet_like.make_folders(tmp_path / "data" / "val", counts=(2, 1), png=True)
    (tmp_path / "data" / "train" / "class_0" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run("convert", "--source=folder", f"--input_dir={tmp_path / 'data'}", f"--output_dir={out}",
                         "--num_workers=1")
    assert result.returncode == 0, result.stderr[-2000:]
    info = tfrecord.read_info(str(out))
    assert info.counts == {"train": 7, "validation": 3} and info.class_names == ("class_0", "class_1")
    assert info.skipped == ({"file": "train/class_0/notes.txt", "reason": "not an image"},)
    assert [n for n in sorted(os.listdir(out)) if "-of-" in n] == ["train-00000-of-00001", "validation-00000-of-00001"]
    for record in read_records(out / "validation-00000-of-00001"):
        name, label = record["image/filename"].decode(), record["image/class/label"]
        original = (tmp_path / "data" / "val" / f"class_{label}" / name).read_bytes()
        assert record["image/format"] == b"PNG"
        np.testing.assert_array_equal(tf.io.decode_png(record["image/encoded"]).numpy(),
                                      tf.io.decode_png(original).numpy())


def test_folder_of_digits_matches_the_digits_records(tmp_path):
    """The digits' own PNG folders (train/, val/) convert to the digits' counts and pixels (gray -> RGB)."""
    from mobilenet_tf.data import digits

    root = digits.materialize(str(tmp_path / "cache"))
    info = convert.write(plan_folder(root), str(tmp_path / "out"))
    assert info.counts == {"train": 1437, "validation": 360} and info.class_names == tuple(map(str, range(10)))
    ours = {r["image/filename"]: r for r in read_records(tmp_path / "out" / "validation-00000-of-00001")}
    theirs = tf.data.TFRecordDataset(paths.shard_files(root, "validation"))
    for record in theirs.take(50):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        mine = ours[feature["image/filename"].bytes_list.value[0]]
        assert mine["image/class/label"] == feature["image/class/label"].int64_list.value[0]
        gray = tf.io.decode_png(feature["image/encoded"].bytes_list.value[0]).numpy()
        np.testing.assert_array_equal(tf.io.decode_png(mine["image/encoded"]).numpy(), np.repeat(gray, 3, axis=2))


def test_nothing_converted_fails(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "data" / "b").mkdir()
    (tmp_path / "data" / "b" / "y.jpg").write_bytes(b"GIF89a broken")
    result = run("convert", "--source=folder", f"--input_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}",
                         "--validation_fraction=0", "--num_workers=1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mobilenet-convert: error: nothing converted: all 2 files were skipped (listed in "
        f"{tmp_path / 'out'}/dataset_info.json)")
