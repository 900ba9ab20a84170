#!/bin/bash
# session 5 (issue 4): cache the re-mixed head data (mix.py), train the confidence head alone from
# the shipped drafter on std + 3×py + ar (600 steps, as stage 4), export. Run from runs/emb5/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp conf5-start
( nice -n 5 $DV prepare cache --samples std.jsonl --out cache-std --target embedded --dtype bf16 \
    --max-len 384 --shard-tokens 4096 --no-progress > cache-std.log 2>&1; stamp cache-std-done ) &
( for s in py ar; do
    nice -n 5 $DV prepare cache --samples $s.jsonl --out cache-$s --target embedded --dtype bf16 \
      --max-len 384 --shard-tokens 4096 --no-progress > cache-$s.log 2>&1; stamp cache-$s-done
  done ) &
wait
nice -n 5 $DV train --cache cache-std --cache cache-py --cache cache-py --cache cache-py --cache cache-ar \
  --target embedded --out run-conf5 --method dspark --init default --train-only confidence \
  --conf-label greedy --block-size 7 --steps 600 --batch-size 8 --micro-batch 8 --num-anchors 16 \
  --lr 1e-3 --warmup-ratio 0.04 --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 \
  --ckpt-every 100 --keep-ckpts 1 --max-len 384 --threads 2 --no-progress > train-conf5.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf5/drafter drafter-conf5 >> export.log 2>&1
stamp conf5-trained
