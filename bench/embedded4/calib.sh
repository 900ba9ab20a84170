#!/bin/bash
# session 4 (issue 4): held-out calibration rounds for drafter $1 on the 62 val prompts + 94 fresh
# ones (calset.jsonl), decoded in two processes (--save-traces), then one STS fit on all of them.
# Run from runs/emb4/:  ./calib.sh drafter-conf cal-conf  (head A, after confdata.sh)
#                       ./calib.sh drafter-conf2 cal-conf2 conf2-trained  (head B, after confdata2.sh)
# (the third argument: the times.log mark to wait for; run as a copy with it written in, calib2.sh)
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
D=$1; N=$2; WAIT=${3:-conf-trained}
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
while ! grep -q $WAIT times.log; do sleep 20; done
stamp $N-start
for h in 1 2; do
  nice -n 5 $DV calibrate --drafter $D --prompts none --data calset$h.jsonl --max-new-tokens 160 \
    --temperature 0 --gamma 7 --seed 0 --batch-size 8 --dry-run --save-traces $N-traces/part$h \
    --quiet > $N-decode$h.log 2>&1 &
done
wait
stamp $N-decoded
nice -n 5 $DV calibrate --drafter $D --traces $N-traces --gamma 7 --temperature 0 --seed 0 \
  --holdout 0.4 --json $N.json --plots $N-plots --quiet > $N.log 2>&1
stamp $N-calibrated
