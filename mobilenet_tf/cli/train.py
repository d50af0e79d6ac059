"""`mobilenet-train`: train (or resume) a MobileNet, evaluate it and export a SavedModel.

With no flags: the `digits` preset, on the embedded scikit-learn digits, in runs/mobilenet_v2_digits.
Started again with the same --model_dir it resumes from the newest checkpoint.

The last line states the outcome: the held-out top-1 and top-5 and where the SavedModel went (with
--json, that as JSON). Exit status: 0 done; 1 an error (one line on stderr); 75 preempted (SIGTERM
or SIGINT: the step in flight finished and was checkpointed; run the same command to resume); 69 a
multi-worker run lost a worker (dead, frozen, or stuck: no step for --step_timeout): restart every
worker with the same command (--exit_code_preempted and --exit_code_peer_lost change the two).
"""

from __future__ import annotations

import json
import sys

from mobilenet_tf import cli, flags

COMMAND = "mobilenet-train"
flags.define_train_flags()


def main(argv):
    cli.no_arguments(COMMAND, argv)
    with cli.one_line_errors(COMMAND):
        cfg = flags.config_from_flags()
    cli.load_tensorflow(COMMAND)
    from mobilenet_tf import distribute, preemption, train
    from mobilenet_tf.data import pipeline, sources

    with cli.one_line_errors(COMMAND):
        # The strategy first: multi-worker collectives must be configured before any other TF work.
        strategy = distribute.get_strategy(cfg.train.strategy, cfg.train.num_gpus, cfg.train.tpu)
        flags.check_replicas(cfg, strategy.num_replicas_in_sync)
        info = sources.resolve(cfg.data)
        if pipeline.steps_per_epoch(info.counts["train"], cfg.train.batch_size) < 1:
            cli.fail(COMMAND, f"--batch_size={cfg.train.batch_size}: larger than the {info.counts['train']} "
                              f"training images of {cfg.data.dataset}; use a smaller batch")
        cli.show_progress_logs()

        def stalled(message):  # from the watchdog's thread: the main one is inside TensorFlow's runtime
            distribute.exit_now(f"{COMMAND}: {message}; restart every worker with the same command: they resume "
                                f"from {distribute.newest_checkpoint(train.model_dir_for(cfg))}",
                                flags.FLAGS.exit_code_peer_lost)

        try:
            result = train.train(cfg, strategy=strategy, datasets=info, on_stall=stalled)
        except preemption.Preempted as stop:
            sys.stderr.write(f"{COMMAND}: {stop}\n")
            sys.exit(flags.FLAGS.exit_code_preempted)
        except distribute.PeerLost as lost:
            distribute.exit_now(f"{COMMAND}: {lost}", flags.FLAGS.exit_code_peer_lost)
    if distribute.is_chief(strategy):  # the other workers of a multi-worker run have nothing to add
        if flags.FLAGS.json:
            print(json.dumps(result), flush=True)
        else:
            exported = f"; exported to {result['export']}" if "export" in result else ""
            print(f"held-out top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['examples']} images)"
                  f"{exported}", flush=True)


def run():
    cli.run_app(main, flags.__name__, COMMAND)


if __name__ == "__main__":
    run()
