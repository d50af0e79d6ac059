"""Planning a conversion: which image files go to which split with which label, read from the
folders alone (no image is opened, and no TensorFlow is loaded), so that the commands check their
input directories at once.

Two layouts: ImageNet (ILSVRC2012: ROOT/train/<wnid>/*.JPEG, validation as ROOT/val/<wnid>/ or
flat with a labels file) and class folders (DIR/<class>/*, split per class by `validation_fraction`
and `seed`, or DIR/train/<class>/ and DIR/val/<class>/ as given). `convert.write` writes a `Plan`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from mobilenet_tf import paths
from mobilenet_tf.errors import UserError

VALIDATION_FOLDERS = ("val", "validation")


class ConvertError(UserError, ValueError):
    """Inputs that cannot be converted; the message names the flag or the file."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One input file and its label."""

    path: str
    file: str  # relative to the input directory: how skip lists name it
    label: int
    size: int = 0
    mtime_ns: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to write: the classes, and each split's files in the order they are written."""

    name: str
    synsets: tuple[str, ...]  # class folder names (wnids for ImageNet), in label order
    texts: tuple[str, ...]  # human-readable names, "" when unknown
    splits: dict  # split -> tuple[Item, ...]
    lossless: bool = False  # re-encode lossless inputs as PNG rather than JPEG
    skipped: tuple = ()  # files dropped while planning: ({"file": ..., "reason": ...}, ...)
    empty_classes: tuple[str, ...] = ()  # class folders without a file for training: see `empty_class_warning`

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(text or synset for synset, text in zip(self.synsets, self.texts))


# --- Planning -------------------------------------------------------------------------------------


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _items(folder: str, root: str, label: int) -> list[Item]:
    """The visible regular files of `folder`, sorted by name, labelled `label`."""
    with os.scandir(folder) as entries:
        files = sorted((e for e in entries if e.is_file() and not e.name.startswith(".")), key=lambda e: e.name)
    items = []
    for entry in files:
        stat = entry.stat()
        items.append(Item(entry.path, os.path.relpath(entry.path, root), label, stat.st_size, stat.st_mtime_ns))
    return items


def _shuffled(items: list[Item], seed: int, split: str) -> tuple[Item, ...]:
    """Items in a seeded order, so that no shard holds a few classes only."""
    rng = np.random.default_rng([seed, paths.SPLITS.index(split)])
    return tuple(items[i] for i in rng.permutation(len(items)))


def _check_dir(flag: str, path: str) -> str:
    if not path or not os.path.isdir(path):
        raise ConvertError(f"--{flag}={path}: no such directory")
    return os.path.abspath(path)


def read_synset_words(path: str) -> dict[str, str]:
    """wnid -> text from LOC_synset_mapping.txt (or synset_words.txt): `n01440764 tench, Tinca tinca`."""
    words = {}
    try:
        with open(path) as f:
            for line in f:
                wnid, _, text = line.strip().partition(" ")
                if wnid:
                    words[wnid] = text.strip()
    except OSError as error:
        raise ConvertError(f"--synset_words={path}: {error.strerror}") from None
    return words


def read_validation_labels(path: str, filenames: list[str]) -> dict[str, str]:
    """filename -> wnid, from Kaggle's LOC_validation_solution.csv (`ImageId,PredictionString` with the
    wnid first), or from a text file of one wnid per line in sorted filename order (the TF converters')."""
    try:
        with open(path, newline="") as f:
            if path.lower().endswith(".csv"):
                rows = list(csv.reader(f))
                if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
                    raise ConvertError(f"--validation_labels={path}: expected the header ImageId,PredictionString")
                by_id = {row[0].strip(): row[1].split()[0] for row in rows[1:] if len(row) > 1 and row[1].split()}
                return {name: by_id[stem] for name in filenames if (stem := os.path.splitext(name)[0]) in by_id}
            wnids = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise ConvertError(f"--validation_labels={path}: {error.strerror}") from None
    if len(wnids) != len(filenames):
        raise ConvertError(f"--validation_labels={path}: {len(wnids)} labels for the {len(filenames)} files in val/")
    return dict(zip(sorted(filenames), wnids))


def plan_imagenet(input_dir: str, *, validation_labels: str = "", synset_words: str = "", seed: int = 0) -> Plan:
    """The ILSVRC2012 layout under `input_dir` (see the module docstring)."""
    root = _check_dir("input_dir", input_dir)
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    has_train, has_val = os.path.isdir(train_dir), os.path.isdir(val_dir)
    if not has_train and not has_val:
        raise ConvertError(f"--input_dir={input_dir}: no train/ or val/ folder (expected ROOT/train/<wnid>/*.JPEG "
                           f"and ROOT/val/)")
    words = read_synset_words(synset_words) if synset_words else {}
    val_classes = _subdirs(val_dir) if has_val else []
    if has_train:
        wnids = _subdirs(train_dir)
    else:
        wnids = val_classes or sorted(words)
    if not wnids:
        raise ConvertError(f"--input_dir={input_dir}: no class folders in train/ (and no --synset_words to name "
                           f"the classes)")
    if words:
        missing = [w for w in wnids if w not in words]
        if missing:
            raise ConvertError(f"--synset_words={synset_words}: no line for {missing[0]} "
                               f"({len(missing)} of the {len(wnids)} classes missing)")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    splits, skipped = {}, []
    if has_train:
        items = [it for wnid in wnids for it in _items(os.path.join(train_dir, wnid), root, index[wnid])]
        splits["train"] = _shuffled(items, seed, "train")
    if has_val and val_classes:
        if validation_labels:
            raise ConvertError(f"--validation_labels={validation_labels}: val/ already has class folders")
        unknown = [c for c in val_classes if c not in index]
        if unknown:
            raise ConvertError(f"--input_dir={input_dir}: val/{unknown[0]} is not a class of train/")
        items = [it for wnid in val_classes for it in _items(os.path.join(val_dir, wnid), root, index[wnid])]
        splits["validation"] = _shuffled(items, seed, "validation")
    elif has_val:
        flat = _items(val_dir, root, -1)
        if flat and not validation_labels:
            raise ConvertError(f"--input_dir={input_dir}: val/ holds the images flat; give their labels with "
                               f"--validation_labels=LOC_val_solution.csv")
        labels = read_validation_labels(validation_labels, [os.path.basename(it.file) for it in flat]) if flat else {}
        items = []
        for it in flat:
            wnid = labels.get(os.path.basename(it.file))
            if wnid is None:
                skipped.append({"file": it.file, "reason": f"no label in {os.path.basename(validation_labels)}"})
            elif wnid not in index:
                skipped.append({"file": it.file, "reason": f"label {wnid} is not a class of train/"})
            else:
                items.append(dataclasses.replace(it, label=index[wnid]))
        splits["validation"] = _shuffled(items, seed, "validation")
    return Plan(
        name="imagenet", synsets=tuple(wnids), texts=tuple(words.get(w, "") for w in wnids), splits=splits,
        skipped=tuple(skipped),
    )


def plan_folder(input_dir: str, *, validation_fraction: float = 0.2, seed: int = 0) -> Plan:
    """Class subfolders of `input_dir`, or its train/ and val/ (see the module docstring).

    Without train/ and val/, each class is split on its own (so every class is held out in the same
    proportion): its files in name order, permuted by (seed, class index), the first
    round(fraction * n) held out.
    """
    root = _check_dir("input_dir", input_dir)
    name = os.path.basename(root)
    train_dir = os.path.join(root, "train")
    val_dir = next((os.path.join(root, v) for v in VALIDATION_FOLDERS if os.path.isdir(os.path.join(root, v))), "")
    splits = {}
    if os.path.isdir(train_dir) and val_dir:
        classes = _subdirs(train_dir)
        unknown = [c for c in _subdirs(val_dir) if c not in classes]
        if unknown:
            raise ConvertError(f"--input_dir={input_dir}: {os.path.basename(val_dir)}/{unknown[0]} is not a class "
                               f"of train/")
        for split, folder in (("train", train_dir), ("validation", val_dir)):
            items = [it for c, cls in enumerate(classes) if os.path.isdir(os.path.join(folder, cls))
                     for it in _items(os.path.join(folder, cls), root, c)]
            splits[split] = _shuffled(items, seed, split)
    else:
        classes = _subdirs(root)
        if not classes:
            raise ConvertError(f"--input_dir={input_dir}: no class subfolders (expected DIR/<class>/<images>, or "
                               f"DIR/train/<class>/ and DIR/val/<class>/)")
        train, validation = [], []
        for c, cls in enumerate(classes):
            items = _items(os.path.join(root, cls), root, c)
            held_out = round(validation_fraction * len(items))
            order = np.random.default_rng([seed, c]).permutation(len(items))
            validation += [items[i] for i in order[:held_out]]
            train += [items[i] for i in order[held_out:]]
        splits["train"] = _shuffled(train, seed, "train")
        if validation_fraction > 0:
            if not validation:
                raise ConvertError(f"--validation_fraction={validation_fraction}: holds out no image of the "
                                   f"{len(train)} in {input_dir}; raise it")
            splits["validation"] = _shuffled(validation, seed, "validation")
    if not any(splits.values()):
        raise ConvertError(f"--input_dir={input_dir}: the class folders hold no files")
    trained = {item.label for item in splits["train"]}
    empty = tuple(cls for c, cls in enumerate(classes) if c not in trained)
    return Plan(name=name, synsets=tuple(classes), texts=("",) * len(classes), splits=splits, lossless=True,
                empty_classes=empty)


def empty_class_warning(plan: Plan, input_dir: str) -> str | None:
    """A line naming the class folders that give no training file (they still take a label), or None."""
    if not plan.empty_classes:
        return None
    names = ", ".join(plan.empty_classes[:10]) + (f" and {len(plan.empty_classes) - 10} more"
                                                   if len(plan.empty_classes) > 10 else "")
    return (f"{input_dir}: {len(plan.empty_classes)} class folder(s) without training files: {names}; each is still "
            f"a class of the model, which no example teaches: add images or remove the folder")


def auto_shards(num_examples: int) -> int:
    """About 1000 examples per shard, at most 1024 shards."""
    return min(1024, max(1, math.ceil(num_examples / 1000)))
