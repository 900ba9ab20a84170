#!/bin/bash
# issue 6, session 3 (stage 3): the target's greedy continuations of 1 455 generated code / math /
# prose requests (builtin:tasks, raw form), cached, then both drafters fine-tuned on stage-2 + new data
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp s3-regen-start
for x in ta tb; do
  nice -n 5 $DV prepare regenerate --prompts prompts-$x.jsonl --out regen-$x.jsonl --target embedded \
    --template raw --max-new-tokens 128 --max-prompt-tokens 256 --batch-size 24 --temperature 0 \
    --no-progress > regen-$x.log 2>&1 &
done; wait
stamp s3-regen-done $(wc -l < regen-ta.jsonl) $(wc -l < regen-tb.jsonl)
for x in ta tb; do
  nice -n 5 $DV prepare cache --samples regen-$x.jsonl --out cache-$x --target embedded \
      --dtype bf16 --max-len 384 --shard-tokens 4096 --no-progress > cache-$x.log 2>&1 &
done; wait
stamp s3-cache-done
for m in dspark dflash; do
  EXTRA=""; [ $m = dflash ] && EXTRA="--alpha-ce 0.1 --alpha-tv 0.9"
  nice -n 5 $DV train --cache ../emb2/cache-a --cache ../emb2/cache-b --cache cache-ta --cache cache-tb \
    --target embedded --out run-s3-$m --method $m $EXTRA --init default --block-size 7 \
    --steps ${STEPS:-1000} --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 6e-4 --warmup-ratio 0.04 \
    --min-lr-ratio 0.1 --chunk-rows 1024 --seed 0 --log-every 5 --ckpt-every 100 --keep-ckpts 1 \
    --max-len 384 --threads 1 --max-minutes ${MAXMIN:-50} --no-progress > train-s3-$m.log 2>&1 &
done; wait
stamp s3-train-done
