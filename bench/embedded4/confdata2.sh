#!/bin/bash
# session 4 (issue 4): more confidence-head data: session 3's 293 fresh turn-form stdlib / pydoc /
# arithmetic samples (runs/emb3/regen-conf2.jsonl without its builtin:tasks rows, which the
# stage-3 backbone's own training set resembles) cached again, then the head trained alone on
# conf-a + these (569 requests), 600 steps. Run from runs/emb4/.
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
while pgrep -f "diag/tr" > /dev/null; do sleep 10; done
stamp confdata2-start
for h in 1 2; do
  ( nice -n 5 $DV prepare cache --samples regen-c$h.jsonl --out cache-c$h --target embedded --dtype bf16 \
      --max-len 384 --shard-tokens 4096 --no-progress > cache-c$h.log 2>&1
    stamp cache-c$h-done ) &
done
wait
nice -n 5 $DV train --cache cache-a1 --cache cache-a2 --cache cache-c1 --cache cache-c2 --target embedded \
  --out run-conf2 --method dspark --init default --train-only confidence --conf-label greedy --block-size 7 \
  --steps 600 --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 \
  --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 --ckpt-every 100 --keep-ckpts 1 \
  --max-len 384 --threads 2 --no-progress > train-conf2.log 2>&1
../../.venv/bin/python -m dspark_viz.train.export run-conf2/drafter drafter-conf2 >> export.log 2>&1
stamp conf2-trained
