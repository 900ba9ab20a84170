#!/bin/bash
# session 5 (issue 4): the confidence head fine-tuned from the shipped (stage-4) one on stage 4's
# 557 requests + the 94 STS-fitting prompts' own decodes (fitdata.py; given 3×), 600 steps as
# stage 4; the 62 held-out calibration prompts stay out. Run from runs/emb6/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
E4=../emb4
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp conf6-start
../../.venv/bin/python ../../bench/embedded5/fitdata.py $E4/cal-conf2-traces calfit.jsonl
nice -n 5 $DV prepare cache --samples calfit.jsonl --out cache-fit --target embedded --dtype bf16 \
  --max-len 384 --shard-tokens 4096 --no-progress > cache-fit.log 2>&1
stamp cache-fit-done
nice -n 5 $DV train --cache $E4/cache-a1 --cache $E4/cache-a2 --cache $E4/cache-c1 --cache $E4/cache-c2 \
  --cache cache-fit --cache cache-fit --cache cache-fit \
  --target embedded --out run-conf6 --method dspark --init default --train-only confidence \
  --conf-label greedy --block-size 7 --steps 600 --batch-size 8 --micro-batch 8 --num-anchors 16 \
  --lr 1e-3 --warmup-ratio 0.04 --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 \
  --ckpt-every 100 --keep-ckpts 1 --max-len 384 --threads 2 --no-progress > train-conf6.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf6/drafter drafter-conf6 >> export.log 2>&1
stamp conf6-trained
