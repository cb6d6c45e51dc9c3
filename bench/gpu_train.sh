#!/usr/bin/env bash
# One prepared GPU session (device tool): train three HIH variants side by side on one GPU from
# the carried pre-cropped 300-W training cache (.cache/300w_train_256, built by models.data.build_cache).
#   A  hih_small, ROI decimal head (the shipped candidate)
#   B  hih_small backbone with the official global decimal head, official labels and loss (the comparison)
#   C  256 px / 64x64 + 8x8 geometry (the paper's), 2 stacks x 128, ROI head (research: does the decimal head pay at 64x64?)
# Usage: BUDGET_S=400 OUT=/tmp/out bash bench/gpu_train.sh
set -u
BUDGET_S=${BUDGET_S:-400}
OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
common=(--cache .cache/300w_train_256 --device "${DEVICE:-cuda}" --set optim.budget_s=$BUDGET_S
        --set optim.batch_size=64 --set optim.lr=0.002 --set optim.eval_every_epochs=10 --set optim.warmup_steps=300)
$PY run.py train --config configs/hih_small.yaml --out runs/gpu_A "${common[@]}" > "$OUT/A.txt" 2>&1 &
$PY run.py train --config configs/hih_small.yaml --out runs/gpu_B "${common[@]}" \
    --set model.decimal_head=global --set codec.label=official --set codec.decimal_decode=argmax \
    --set loss.decimal_loss=official --set loss.decimal_weight=0.05 > "$OUT/B.txt" 2>&1 &
$PY run.py train --config configs/hih_small.yaml --out runs/gpu_C "${common[@]}" \
    --set model.input_px=256 --set model.stacks=2 --set model.depth=4 > "$OUT/C.txt" 2>&1 &
wait
for r in A B C; do
  cp runs/gpu_$r/best.pt "$OUT/best_$r.pt" 2>/dev/null
  cp runs/gpu_$r/log.csv "$OUT/log_$r.csv" 2>/dev/null
  tail -c 600 "$OUT/$r.txt"; echo
done
