#!/usr/bin/env bash
# One GPU. Extra flags pass through, e.g.:
#   scripts/train_gpu.sh --preset=mobilenet_v2_imagenet --dataset=tfrecord:/data/imagenet --batch_size=128
# Started again with the same flags (same --model_dir), it resumes from the newest checkpoint.
set -euo pipefail
exec mobilenet-train --strategy=one_device --num_gpus=1 "$@"
