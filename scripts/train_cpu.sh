#!/usr/bin/env bash
# CPU only: GPUs hidden, float32, no XLA (on CPU, XLA made a MobileNetV2 step 10x slower and
# mixed_float16 3-4x slower here). With no flags it trains the embedded digits.
# Started again with the same flags (same --model_dir), it resumes from the newest checkpoint.
set -euo pipefail
export CUDA_VISIBLE_DEVICES=""
exec mobilenet-train --strategy=one_device --precision=float32 --xla=false "$@"
