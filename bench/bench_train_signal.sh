#!/usr/bin/env bash
# Issue 21: the training signal of regenerated data — target cache + cached steps vs online steps,
# side by side in one run on the same samples (every N-th record of data/regen/embedded).
#   bash bench/bench_train_signal.sh [EVERY_NTH=150] [STEPS=6]
# Prints wall seconds of: the cache write, STEPS cached training steps, STEPS online steps
# (both fine-tune the shipped DSpark drafter with the recipe's settings, one thread each).
set -euo pipefail
N=${1:-150}; STEPS=${2:-6}
export OMP_NUM_THREADS=1
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
A=dspark_viz/assets/drafters
TRAIN="--target embedded --block-size 7 --batch-size 8 --micro-batch 8 --num-anchors 16 --warmup-ratio 0.04
  --min-lr-ratio 0.1 --chunk-rows 1024 --threads 1 --no-progress --lr 6e-4 --max-len 384 --seed 0 --log-every 1"
dspark-viz prepare regen-export --out data/regen/embedded --to "$W/s.jsonl" --parts "$N" --part 0
t() { date +%s.%N; }
t0=$(t); dspark-viz prepare cache --samples "$W/s.jsonl" --out "$W/cache" --target embedded --dtype bf16 \
  --max-len 384 --shard-tokens 4096 --no-progress
t1=$(t); dspark-viz train --cache "$W/cache" --out "$W/run-cache" --method dspark --init $A/gemma3-270m-dspark --steps "$STEPS" $TRAIN
t2=$(t); dspark-viz train --online --samples "$W/s.jsonl" --out "$W/run-online" --method dspark --init $A/gemma3-270m-dspark --steps "$STEPS" $TRAIN
t3=$(t)
python - "$t0" "$t1" "$t2" "$t3" "$STEPS" <<'PY'
import sys
t0, t1, t2, t3, n = map(float, sys.argv[1:])
c, tc, to = t1 - t0, t2 - t1, t3 - t2
print(f"cache write {c:.1f} s · {n:.0f} cached steps {tc:.1f} s ({tc / n:.1f} s/step) · "
      f"{n:.0f} online steps {to:.1f} s ({to / n:.1f} s/step) · online/cached step {to / tc:.1f}×")
PY
