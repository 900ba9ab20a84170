#!/bin/bash
# session 3: the stage-2 (shipped) drafter's confidence head on T = 0 labels from the turn-form data,
# then STS on the val prompts — the fallback if stage 3 does not beat stage 2
set -u
cd /work/main
. .venv/bin/activate
export OMP_NUM_THREADS=1
R=runs/emb3
stamp() { echo "$(date -u +%FT%TZ) $*" >> $R/times.log; }
while ! grep -q cache-conf2-done $R/times.log; do sleep 20; done
nice -n 5 dspark-viz train --cache $R/cache-conf2 --target embedded --out $R/run-s2-conf2 \
  --method dspark --init default --train-only confidence --conf-label greedy --block-size 7 \
  --steps 300 --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 \
  --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 --ckpt-every 100 --keep-ckpts 1 \
  --max-len 384 --threads 1 --no-progress > $R/train-s2-conf2.log 2>&1
python -m dspark_viz.train.export $R/run-s2-conf2/drafter $R/drafter-s2-conf2 >> $R/export.log 2>&1
stamp s2-conf2-trained
nice -n 5 dspark-viz calibrate --drafter $R/drafter-s2-conf2 --prompts none --data runs/emb/prompts/val.jsonl \
   --max-new-tokens 160 --temperature 0 --gamma 7 --seed 0 --holdout 0.4 --batch-size 8 \
   --json $R/cal-s2-conf2.json --plots $R/cal-plots-s2-conf2 --quiet > $R/cal-s2-conf2.log 2>&1
stamp s2-conf2-calibrated
