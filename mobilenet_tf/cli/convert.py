"""`mobilenet-convert`: ImageNet, or folders of class subfolders, -> TFRecord shards + dataset_info.json.

    mobilenet-convert --source=imagenet --input_dir=ILSVRC/Data/CLS-LOC --output_dir=/data/imagenet \\
        --validation_labels=LOC_val_solution.csv --synset_words=LOC_synset_mapping.txt
    mobilenet-convert --source=folder --input_dir=flower_photos --output_dir=/data/flowers

Then train with `mobilenet-train --dataset=tfrecord:/data/imagenet`. Started again on the same
--output_dir, it skips the shards an earlier run completed.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from mobilenet_tf import cli

COMMAND = "mobilenet-convert"
FLAGS = flags.FLAGS

flags.DEFINE_enum("source", "imagenet", ["imagenet", "folder"], "Input layout: ILSVRC2012 or class subfolders.")
flags.DEFINE_string("input_dir", None, "imagenet: ROOT with train/<wnid>/ and val/; folder: DIR with <class>/ "
                    "subfolders, or with train/<class>/ and val/<class>/.")
flags.DEFINE_string("output_dir", None, "Where the shards and dataset_info.json go.")
flags.DEFINE_string("validation_labels", "", "imagenet with flat val/*.JPEG: Kaggle's LOC_val_solution.csv.")
flags.DEFINE_string("synset_words", "", "imagenet: LOC_synset_mapping.txt, for class names.")
flags.DEFINE_integer("train_shards", None, "Training shards (imagenet default 1024; folder: ~1000 images each).")
flags.DEFINE_integer("validation_shards", None, "Validation shards (imagenet default 128; folder: ~1000 images each).")
flags.DEFINE_integer("num_workers", None, "Worker processes (default: all cores).")
flags.DEFINE_boolean("strict", False, "Fail on the first file that would be skipped.")
flags.DEFINE_integer("seed", 0, "Seed of the shuffle across shards (and of the folder split).")
flags.DEFINE_float("validation_fraction", 0.2, "folder without train/ and val/: the share of each class held out.")


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    """`done/total [=====>    ] 1234 img/s ETA 5m02s` on stderr: redrawn in place on a terminal,
    a line every `every` seconds otherwise (logs)."""

    def __init__(self, stream=sys.stderr, every: float = 10.0, width: int = 30):
        self.stream, self.every, self.width = stream, every, width
        self.tty = stream.isatty()
        self.start = self.first = None
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None or done == self.first:  # the rate counts from the first image of this run
            self.start, self.first = now, done
        if not self.tty and now - self.last < self.every and done < total:
            return
        self.last = now
        rate = (done - self.first) / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        filled = self.width * done // max(total, 1)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        line = f"{done}/{total} images [{bar[:self.width]}] {rate:.0f} img/s ETA {_duration(eta)}"
        self.stream.write(f"\r{line}\033[K" if self.tty else f"{line}\n")  # \033[K: clear the rest of the line
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _check_flags() -> None:
    for name in ("input_dir", "output_dir"):
        if not FLAGS[name].value:
            cli.fail(COMMAND, f"--{name} is required")
    for name in ("train_shards", "validation_shards", "num_workers"):
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
            cli.fail(COMMAND, f"--{name}={FLAGS[name].value}: must be at least 1")
    if not 0 <= FLAGS.validation_fraction < 1:
        cli.fail(COMMAND, f"--validation_fraction={FLAGS.validation_fraction}: must be in [0, 1)")


def main(argv):
    cli.no_arguments(COMMAND, argv)
    _check_flags()
    from mobilenet_tf.data import plan

    with cli.one_line_errors(COMMAND):  # the inputs, read without TensorFlow
        if FLAGS.source == "imagenet":
            planned = plan.plan_imagenet(FLAGS.input_dir, validation_labels=FLAGS.validation_labels,
                                         synset_words=FLAGS.synset_words, seed=FLAGS.seed)
        else:
            planned = plan.plan_folder(FLAGS.input_dir, validation_fraction=FLAGS.validation_fraction,
                                       seed=FLAGS.seed)
            warning = plan.empty_class_warning(planned, FLAGS.input_dir)
            if warning:
                sys.stderr.write(f"{COMMAND}: warning: {warning}\n")
    cli.load_tensorflow(COMMAND)
    from mobilenet_tf.data import convert

    with cli.one_line_errors(COMMAND):
        shards = dict(convert.IMAGENET_SHARDS) if FLAGS.source == "imagenet" else {}
        for split, flag in (("train", FLAGS.train_shards), ("validation", FLAGS.validation_shards)):
            if flag is not None:
                shards[split] = flag
        num_workers = FLAGS.num_workers or convert.default_num_workers()
        sizes = ", ".join(f"{len(items)} {split}" for split, items in planned.splits.items())
        sys.stderr.write(f"Converting {sizes} files of {planned.name} ({len(planned.synsets)} classes) into "
                         f"{FLAGS.output_dir} with {num_workers} worker(s)\n")
        info = convert.write(planned, FLAGS.output_dir, shards=shards, num_workers=num_workers, strict=FLAGS.strict,
                             progress=ProgressBar())
    for skip in info.skipped[:20]:
        sys.stderr.write(f"skipped {skip['file']}: {skip['reason']}\n")
    if len(info.skipped) > 20:
        sys.stderr.write(f"... and {len(info.skipped) - 20} more\n")
    if not sum(info.counts.values()):
        cli.fail(COMMAND, f"nothing converted: all {len(info.skipped)} files were skipped (listed in "
                          f"{FLAGS.output_dir}/dataset_info.json)")
    written = ", ".join(f"{n} {split}" for split, n in info.counts.items())
    print(f"Wrote {written} records of {info.num_classes} classes to {FLAGS.output_dir}; "
          f"{len(info.skipped)} files skipped (listed in dataset_info.json)")


def run():
    cli.run_app(main, __name__, COMMAND)


if __name__ == "__main__":
    run()
