#!/usr/bin/env bash
# One prepared GPU session (device tool, about 6 minutes): the CUDA tests (streams against the direct
# path, half precision), `bench speed --device cuda` (model and whole landmark stage per batch size,
# streams serial vs overlapped, large batches with host vs device crops), and `extract` of 32 demo
# clips batched through one network on the GPU (the path a GPU user runs).
# The device image has torch, numpy, OpenCV, onnx and pytest but not PyAV or filterpy, nor MediaPipe:
# carry the two as wheels (made here once, for its Python 3.12) and detect with OpenCV's detector there:
#   pip download av==18.1.0 filterpy==2.0.0 --no-deps --python-version 3.12 --only-binary=:all: \
#       --platform manylinux_2_28_x86_64 -d .gpu-wheels
#   device run: command "OUT=$OUT bash bench/gpu_speed.sh", carry [".gpu-wheels"], timeout_s 540
set -u
PY=${PY:-python3}
OUT=${OUT:-runs/gpu-speed}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD        # the checkout is the package there (nothing to install from)
$PY -m pip install --no-deps --no-index -q .gpu-wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
$PY run.py bench speed --device cuda --out "$OUT" 2>&1 | tail -40 | tee "$OUT/speed.txt"
CLIPS=$(mktemp -d)
$PY -c "import sys; from pathlib import Path; from bench.extract import _clips; _clips(Path(sys.argv[1]), 32, 150)" "$CLIPS"
for videos in 32 0; do       # 32 inputs batched through one network, then one input at a time
  /usr/bin/time -f "wall %e s" $PY run.py extract "$CLIPS" --out "$CLIPS/out-$videos" --device cuda --detector haar \
      --batch-videos $videos --workers 1 2>&1 | tail -4 | tee -a "$OUT/extract.txt"
done
