#!/bin/bash
# session 6 (issue 4): the confidence head re-fitted on longer answers. Stage 4's head trained on
# 128-token answers in a 384-token window, while calibration decodes run 160 tokens after prompts of
# up to ~450 tokens; its over-prediction grows past answer position 64 and absolute position 256
# (bench/embedded6/offsets.txt). Same 567 fresh prompts as stage 4 (runs/emb4/conf-a*.jsonl and
# the session-3 conf2 turn-form prompts behind regen-c*), regenerated greedily to 192 tokens with
# prompts up to 512 tokens, cached with a 704-token window, then the shipped drafter's confidence
# head alone fine-tuned as in stage 4 (600 steps, lr 1e-3, seed 3). Run from runs/emb9/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp head9-start
for h in 1 2; do
  ( nice -n 5 $DV prepare regenerate --prompts head-p$h.jsonl --out regen-h$h.jsonl --target embedded \
      --template raw --max-new-tokens 192 --max-prompt-tokens 512 --batch-size 24 --temperature 0 \
      --no-progress > regen-h$h.log 2>&1
    stamp regen-h$h-done $(wc -l < regen-h$h.jsonl)
    nice -n 5 $DV prepare cache --samples regen-h$h.jsonl --out cache-h$h --target embedded --dtype bf16 \
      --max-len 704 --shard-tokens 4096 --no-progress > cache-h$h.log 2>&1
    stamp cache-h$h-done ) &
done
wait
nice -n 5 $DV train --cache cache-h1 --cache cache-h2 --target embedded --out run-conf9 \
  --method dspark --init default --train-only confidence --conf-label greedy --block-size 7 \
  --steps 600 --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 \
  --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 --ckpt-every 100 --keep-ckpts 1 \
  --max-len 704 --threads 2 --no-progress > train-conf9.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf9/drafter drafter-conf9 >> export.log 2>&1
stamp conf9-trained
