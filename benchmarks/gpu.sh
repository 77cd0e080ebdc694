#!/usr/bin/env bash
# The GPU check: the ELA-CNN trained on data/ela (written by `dvc repro ela`) in float32 and in
# mixed float16, under PyTorch's Keras backend, with samples/s, epochs and test AUC for each.
# Usage, from the repo root on a machine with a CUDA GPU and torch:  bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND="${KERAS_BACKEND:-torch}"
python -c 'import keras, sys; print("keras", keras.__version__, "backend", keras.backend.backend())'
if [ "$KERAS_BACKEND" = torch ]; then
    python -c 'import torch; print("torch", torch.__version__, "CUDA:", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
fi
python benchmarks/gpu.py --data data/ela --params params.yaml --precisions float32 float16 "$@"
