#!/usr/bin/env bash
# Augmentation-strength study on one GPU (device tool): hih_small trained three times side by side for
# the same wall-time budget, with no / default / strong augmentation, from the carried cache.
# Usage: BUDGET_S=120 OUT=/tmp/out bash bench/gpu_augment.sh ; evaluate the best_*.pt with `run.py eval`.
set -u
BUDGET_S=${BUDGET_S:-120}
OUT=${OUT:-runs/gpu_aug}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
common=(--cache .cache/300w_train_256 --device "${DEVICE:-cuda}" --set optim.budget_s=$BUDGET_S
        --set optim.batch_size=64 --set optim.lr=0.002 --set optim.eval_every_epochs=10 --set optim.warmup_steps=300)
$PY run.py train --config configs/hih_small.yaml --out runs/aug_none "${common[@]}" \
    --set augment.scale=0 --set augment.rotate_p=0 --set augment.shift=0 --set augment.flip_p=0 \
    --set augment.brightness=0 --set augment.contrast=0 --set augment.saturation=0 \
    --set augment.blur_p=0 --set augment.occlusion_p=0 > "$OUT/none.txt" 2>&1 &
$PY run.py train --config configs/hih_small.yaml --out runs/aug_default "${common[@]}" > "$OUT/default.txt" 2>&1 &
$PY run.py train --config configs/hih_small.yaml --out runs/aug_strong "${common[@]}" \
    --set augment.scale=0.25 --set augment.rotate_p=1.0 --set augment.rotate_deg=40 --set augment.shift=0.1 \
    --set augment.blur_p=0.3 --set augment.occlusion_p=0.4 > "$OUT/strong.txt" 2>&1 &
wait
for r in none default strong; do
  cp runs/aug_$r/best.pt "$OUT/best_$r.pt" 2>/dev/null
  cp runs/aug_$r/log.csv "$OUT/log_$r.csv" 2>/dev/null
  tail -c 300 "$OUT/$r.txt"; echo
done
