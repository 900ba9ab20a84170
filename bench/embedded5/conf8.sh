#!/bin/bash
# session 5 (issue 4): as conf7.sh, with the 94 STS-fitting prompts' own decodes added (fitdata.py, 3×;
# the 62 held-out prompts stay out). The head fine-tuned from the shipped (stage-4) one on stage 4's
# 557 requests, anchors drawn from where fixed-γ T = 0 decoding starts its rounds
# (--conf-anchors rounds), 600 steps as stage 4; then the stage-5 calibration rounds re-scored with
# it (rescore.py, two processes) and STS fitted on them (40 % of the prompts held out).
# Run from runs/emb8/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
E4=../emb4
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp conf8-start
nice -n 5 $DV train --cache $E4/cache-a1 --cache $E4/cache-a2 --cache $E4/cache-c1 --cache $E4/cache-c2 \
  --cache ../emb6/cache-fit --cache ../emb6/cache-fit --cache ../emb6/cache-fit \
  --target embedded --out run-conf8 --method dspark --init default --train-only confidence \
  --conf-label greedy --conf-anchors rounds --block-size 7 --steps 600 --batch-size 8 --micro-batch 8 \
  --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 \
  --log-every 10 --ckpt-every 100 --keep-ckpts 1 --max-len 384 --threads 2 --no-progress \
  > train-conf8.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf8/drafter drafter-conf8 >> export.log 2>&1
stamp conf8-trained
for h in 1 2; do
  ../../.venv/bin/python ../../bench/embedded5/rescore.py drafter-conf8 ../emb5/cal-conf5-traces/part$h \
    rs7/part$h > rescore$h.log 2>&1 &
done
wait
stamp conf8-rescored
$DV calibrate --drafter drafter-conf8 --traces rs7 --gamma 7 --temperature 0 --seed 0 \
  --holdout 0.4 --json cal-conf8.json --plots cal-conf8-plots --quiet > cal-conf8.log 2>&1
stamp conf8-calibrated
