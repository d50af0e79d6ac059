#!/usr/bin/env bash
# All GPUs of this host (MirroredStrategy); --batch_size is global, e.g. 8 GPUs x 128:
#   scripts/train_multi_gpu.sh --preset=mobilenet_v2_imagenet --dataset=tfrecord:/data/imagenet \
#       --batch_size=1024 --precision=mixed_float16
# Started again with the same flags (same --model_dir), it resumes from the newest checkpoint.
set -euo pipefail
exec mobilenet-train --strategy=mirrored "$@"
