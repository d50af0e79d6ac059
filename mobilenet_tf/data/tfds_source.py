"""`tfds:NAME[:VERSION]`: a TFDS image classification set, read from TFDS's own record files.

TFDS writes tf.train.Examples holding the image's encoded bytes and its int64 class under the
builder's supervised keys (("image", "label") for imagenet2012, mnist, cifar10, ...), so the same
`build_dataset` reads them: the DatasetInfo lists TFDS's files per split and names those keys. Our
"validation" is TFDS's "validation" split, or its "test" split when there is none.

A set that is not prepared is prepared on first use (`download_and_prepare`). imagenet2012 cannot be
downloaded: its builder reads ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from
<tfds_data_dir>/downloads/manual/ (and needs `importlib_resources`, in requirements.txt).
"""

from __future__ import annotations

import os

from mobilenet_tf.data import tfrecord

VALIDATION_SPLITS = ("validation", "test")


def _builder(arg: str, data_dir: str):
    import tensorflow_datasets as tfds

    name, _, version = arg.partition(":")
    return tfds.builder(f"{name}:{version}" if version else name, data_dir=data_dir or None)


def _keys(builder) -> tuple[str, str] | None:
    """(image key, label key) of an image classification set, else None."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        return None
    features = builder.info.features
    image, label = (features[k] if k in features else None for k in keys)
    if isinstance(image, tfds.features.Image) and isinstance(label, tfds.features.ClassLabel):
        return tuple(keys)
    return None


def _validation_split(builder) -> str | None:
    return next((s for s in VALIDATION_SPLITS if s in builder.info.splits), None)


def _manual_dir(builder) -> str:
    return os.path.join(str(builder.data_dir_root), "downloads", "manual")


def check(arg: str, data_dir: str) -> str | None:
    """None when `tfds:arg` (a name given: see `specs.check_spec`) can be read (or prepared), else a
    sentence saying what is wrong."""
    where = f"--tfds_data_dir={data_dir}" if data_dir else "TFDS's default data directory"
    try:
        builder = _builder(arg, data_dir)
    except Exception as error:  # noqa: BLE001 - TFDS raises several kinds; all mean "not found"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"no TFDS data set {arg} in {where} or the TFDS catalog ({first})"
    if _keys(builder) is None:
        return f"{builder.info.name} is not an image classification set (its supervised keys are not an Image " \
               f"and a ClassLabel)"
    if not builder.is_prepared():
        manual = _manual_dir(builder)
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (os.path.isdir(manual) and os.listdir(manual)):
            instructions = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
            return f"{builder.info.name} is not prepared and must be downloaded by hand into {manual} ({where}): " \
                   f"{instructions}"
        return None
    if str(builder.info.file_format.value) != "tfrecord":
        return f"{builder.info.name} in {builder.data_dir} is stored as {builder.info.file_format.value}; " \
               f"prepare it with TFDS's default file_format=tfrecord"
    if "train" not in builder.info.splits or _validation_split(builder) is None:
        return f"{builder.info.name} needs a train split and a validation or test split (it has " \
               f"{', '.join(builder.info.splits)})"
    return None


def resolve(arg: str, data_dir: str) -> tfrecord.DatasetInfo:
    """The DatasetInfo of `tfds:arg` (prepared first if need be), reading TFDS's record files."""
    builder = _builder(arg, data_dir)
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except OSError as error:  # requests' ConnectionError and the file system's errors
            where = f"--tfds_data_dir={data_dir}" if data_dir else "TFDS's default data directory"
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise tfrecord.SourceError(
                f"--dataset=tfds:{arg}: cannot prepare {builder.info.name} in {where} ({first}); prepare it where "
                f"there is a network (tfds build {builder.info.name} --data_dir=DIR), copy DIR here and pass "
                f"--tfds_data_dir=DIR"
            ) from None
    info = builder.info
    keys = _keys(builder)
    label = info.features[keys[1]]
    splits = {"train": "train", "validation": _validation_split(builder)}
    return tfrecord.DatasetInfo(
        name=info.name,
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        counts={ours: info.splits[theirs].num_examples for ours, theirs in splits.items()},
        keys=keys,
        split_files={ours: tuple(str(p) for p in info.splits[theirs].filepaths) for ours, theirs in splits.items()},
        data_dir=str(builder.data_dir),
    )
