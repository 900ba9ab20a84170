#!/bin/bash
# session 6 (issue 4): the 203 fresh calibration prompts of make_calset3.py decoded with the shipped
# drafter at fixed ℓ = γ = 7, T = 0, 160 new tokens (as bench/embedded4/calib.sh), two processes,
# traces saved for one STS fit over these and the 156 stage-5 prompts (runs/emb5/cal-conf5-traces).
# Run from runs/emb9/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp decode3-start
for h in 1 2; do
  nice -n 5 $DV calibrate --drafter default --prompts none --data calset3_$h.jsonl --max-new-tokens 160 \
    --temperature 0 --gamma 7 --seed 0 --batch-size 8 --dry-run --save-traces cal3-traces/part$h \
    --quiet > decode3_$h.log 2>&1 &
done
wait
stamp decode3-done
