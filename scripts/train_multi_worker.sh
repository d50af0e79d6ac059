#!/usr/bin/env bash
# One worker of a multi-worker run (MultiWorkerMirroredStrategy). Run it on every host with the
# same WORKERS list and this host's INDEX (worker 0 is the chief: it writes checkpoints, logs and
# the export; --model_dir must be storage all workers reach):
#   WORKERS=host1:12345,host2:12345 INDEX=0 scripts/train_multi_worker.sh \
#       --preset=mobilenet_v2_imagenet --dataset=tfrecord:/data/imagenet --model_dir=/shared/run
# Or set TF_CONFIG yourself. A worker that dies ends the step for all: start them all again with
# the same command and they resume from the chief's newest checkpoint. Every survivor of a lost
# worker stops within seconds with exit status 69, so when each host restarts its own worker all
# of them restart. MAX_RESTARTS (default 0) restarts this worker automatically after exit status
# 75 (SIGTERM: the step was checkpointed), 69 (a peer was lost) or death by a signal (SIGKILL:
# it resumes from the newest checkpoint).
set -euo pipefail
if [[ -z "${TF_CONFIG:-}" ]]; then
  : "${WORKERS:?set WORKERS=host:port,host:port,... (or TF_CONFIG)}"
  : "${INDEX:?set INDEX to the position of this host in WORKERS}"
  hosts=$(printf '"%s",' ${WORKERS//,/ })
  export TF_CONFIG="{\"cluster\": {\"worker\": [${hosts%,}]}, \"task\": {\"type\": \"worker\", \"index\": ${INDEX}}}"
fi
restarts=0
while true; do
  status=0
  mobilenet-train --strategy=multi_worker "$@" || status=$?
  if (( (status != 75 && status != 69 && status <= 128) || restarts >= ${MAX_RESTARTS:-0} )); then
    exit "$status"
  fi
  restarts=$((restarts + 1))
  echo "train_multi_worker.sh: worker stopped (exit status ${status}); restart ${restarts}" >&2
done
