#!/bin/bash
# session 4 (issue 4): confidence-head data drawn like the calibration prompts, in turn form,
# regenerated and cached in two processes, then the shipped stage-3 drafter's head trained alone on
# T = 0 (greedy) labels. Run from runs/emb4/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp confdata-start
for h in 1 2; do
  ( nice -n 5 $DV prepare regenerate --prompts conf-a$h.jsonl --out regen-a$h.jsonl --target embedded \
      --template raw --max-new-tokens 128 --max-prompt-tokens 256 --batch-size 24 --temperature 0 \
      --no-progress > regen-a$h.log 2>&1
    stamp regen-a$h-done $(wc -l < regen-a$h.jsonl)
    nice -n 5 $DV prepare cache --samples regen-a$h.jsonl --out cache-a$h --target embedded --dtype bf16 \
      --max-len 384 --shard-tokens 4096 --no-progress > cache-a$h.log 2>&1
    stamp cache-a$h-done ) &
done
wait
nice -n 5 $DV train --cache cache-a1 --cache cache-a2 --target embedded --out run-conf \
  --method dspark --init default --train-only confidence --conf-label greedy --block-size 7 \
  --steps 300 --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 \
  --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 --ckpt-every 100 --keep-ckpts 1 \
  --max-len 384 --threads 2 --no-progress > train-conf.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf/drafter drafter-conf > export.log 2>&1
stamp conf-trained
