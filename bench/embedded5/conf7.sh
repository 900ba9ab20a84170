#!/bin/bash
# session 5 (issue 4): the confidence head fine-tuned from the shipped (stage-4) one on stage 4's
# 557 requests (+ any caches given after N), anchors drawn from where fixed-γ T = 0 decoding starts
# its rounds (--conf-anchors rounds), 600 steps as stage 4; then the stage-5 calibration rounds
# re-scored with it (rescore.py, two processes) and STS fitted on them (40 % of the prompts held out).
# Run from runs/embN/:
#   ../../bench/embedded5/conf7.sh 7                        (head 7, in runs/emb7)
#   ../../bench/embedded5/conf7.sh 8 ../emb6/cache-fit ../emb6/cache-fit ../emb6/cache-fit
#                                   (head 8, in runs/emb8: + the 94 STS-fitting prompts' decodes, 3×)
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
E4=../emb4
N=$1; shift
EXTRA=()
for c in "$@"; do EXTRA+=(--cache "$c"); done
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp conf$N-start
nice -n 5 $DV train --cache $E4/cache-a1 --cache $E4/cache-a2 --cache $E4/cache-c1 --cache $E4/cache-c2 \
  "${EXTRA[@]}" --target embedded --out run-conf$N --method dspark --init default --train-only confidence \
  --conf-label greedy --conf-anchors rounds --block-size 7 --steps 600 --batch-size 8 --micro-batch 8 \
  --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 \
  --log-every 10 --ckpt-every 100 --keep-ckpts 1 --max-len 384 --threads 2 --no-progress \
  > train-conf$N.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf$N/drafter drafter-conf$N >> export.log 2>&1
stamp conf$N-trained
for h in 1 2; do
  ../../.venv/bin/python ../../bench/embedded5/rescore.py drafter-conf$N ../emb5/cal-conf5-traces/part$h \
    rs$N/part$h > rescore$h.log 2>&1 &
done
wait
stamp conf$N-rescored
$DV calibrate --drafter drafter-conf$N --traces rs$N --gamma 7 --temperature 0 --seed 0 \
  --holdout 0.4 --json cal-conf$N.json --plots cal-conf$N-plots --quiet > cal-conf$N.log 2>&1
stamp conf$N-calibrated
