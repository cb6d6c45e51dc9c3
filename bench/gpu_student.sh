#!/usr/bin/env bash
# One prepared GPU session (device tool): the 96 px student of the default network (0.63x its cost on
# a CPU), trained on the whole hard-face recipe with the two shipped networks as teachers, as the CPU
# runs in bench/RESULTS.md (The model table) were, for the many epochs a CPU cannot give it.
# Two runs side by side on one GPU: A from the default `fast` weights, B from the CPU-trained student.
#
# Here, once (15 s; needs `run.py synth-poses` done first): pack the training faces small enough
# to carry (the student reads 96 px crops, a 160 px cache loses nothing for it):
#   PY=.venv/bin/python bash bench/gpu_student.sh pack
# Then the device run: command "OUT=$OUT bash bench/gpu_student.sh", carry [".cache/student"], timeout_s 560.
# Back here, score each mean on 300-W common (ground-truth boxes) and, if one holds the default's accuracy,
# the rest of The model table:
#   python run.py eval --weights <files_at>/student_A.pt --competitors '' --decodes hih --views 1 --protocol gt-box
set -u
PY=${PY:-python3}
CARRY=${CARRY:-.cache/student}
SIDE_PX=${SIDE_PX:-160}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD

if [ "${1:-}" = pack ]; then
  # every real face (the validation hold-out is drawn by index: the order must stay) and 6,000 of the
  # synthetic views, evenly spaced so every face keeps some of its poses
  $PY - "$CARRY" "$SIDE_PX" "${DATA:-../shared/data/300w}" "${SYNTH:-$HOME/.cache/hihtrack/synth-poses}" <<'EOF'
import sys
from pathlib import Path
from models import data as D
carry, side, data, synth = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
D.build_cache(D.load_faces(data, "train"), carry / "300w", D.CacheSpec(side, 1.8), quality=90)
D.shrink_cache(synth, carry / "synth", side, quality=85, keep=6000)
EOF
  du -sh "$CARRY"/*
  exit 0
fi

BUDGET_S=${BUDGET_S:-420}
OUT=${OUT:-runs/gpu-student}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
$PY -c "import cv2, scipy, yaml" || { echo "training needs OpenCV, SciPy and PyYAML here: carry their wheels"; exit 1; }
recipe=(--config configs/hih_small.yaml --cache "$CARRY/300w" --device "${DEVICE:-cuda}"
        --set model.bottleneck=0.25 --set model.input_px=96 --set model.peak_cell=centroid
        --set data.synth="$CARRY/synth" --set data.synth_share=0.25 --set data.balance_power=0.5
        --set loss.teacher=models/weights/hih_fast_300w.pt,models/weights/hih_small_300w.pt
        --set loss.distill_weight=2.0 --set loss.distill_on=real --set loss.distill_target=landmarks
        --set loss.synth_jaw_weight=0.2 --set loss.closed_lid_weight=5
        --set augment.shift=0.1 --set augment.real_occluder_p=0.2 --set augment.motion_blur_p=0.1
        --set augment.defocus_p=0.1 --set augment.low_light_p=0.1 --set augment.jpeg_p=0.15
        --set augment.eyes_closed_p=0.25
        --set optim.batch_size=64 --set optim.budget_s="$BUDGET_S" --set optim.warmup_steps=200
        --set optim.eval_every_epochs=2 --set optim.keep_epochs=true)
$PY run.py train "${recipe[@]}" --init models/weights/hih_fast_300w.pt --set optim.lr=0.001 \
    --out runs/gpu_student_A > "$OUT/A.txt" 2>&1 &
$PY run.py train "${recipe[@]}" --init bench/results/candidate_fast96_two_teachers/hih_fast96_candidate.pt \
    --set optim.lr=0.0005 --out runs/gpu_student_B > "$OUT/B.txt" 2>&1 &
wait
for r in A B; do
  run=runs/gpu_student_$r
  cp "$run/log.csv" "$OUT/log_$r.csv" 2>/dev/null
  # the shipped way: the mean of the last five kept epochs (the schedule's tail)
  last=($(ls "$run"/epoch_*.pt 2>/dev/null | tail -5))
  if [ ${#last[@]} -gt 1 ]; then $PY run.py average --out "$OUT/student_$r.pt" "${last[@]}"
  elif [ ${#last[@]} -eq 1 ]; then cp "${last[0]}" "$OUT/student_$r.pt"; fi
  tail -c 800 "$OUT/$r.txt"; echo
done
