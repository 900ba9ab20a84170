#!/bin/bash
# session 6 (issue 4): the 203 fresh calibration prompts of make_calset3.py decoded with the shipped
# drafter at fixed ℓ = γ = 7, T = 0, 160 new tokens (as bench/embedded4/calib.sh), two processes,
# traces saved for one STS fit over these and the 156 stage-5 prompts (runs/emb5/cal-conf5-traces).
# Run from runs/emb9/. Session 7 ran it from runs/emb10/ as `decode_calset3.sh calset4 cal4-traces`
# (the 210 prompts of `make_calset3.py … --seed 71`).
set -u
SET=${1:-calset3}
OUT=${2:-cal3-traces}
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp "decode $SET start"
for h in 1 2; do
  nice -n 5 $DV calibrate --drafter default --prompts none --data ${SET}_$h.jsonl --max-new-tokens 160 \
    --temperature 0 --gamma 7 --seed 0 --batch-size 8 --dry-run --save-traces $OUT/part$h \
    --quiet > decode_${SET}_$h.log 2>&1 &
done
wait
stamp "decode $SET done"
