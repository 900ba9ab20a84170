#!/bin/bash
# session 4: the hardware-aware scheduler on the profiled CPU curve with the new confidence head
# (shipped) beside the session-3 head (same backbone), and plain decoding, one run, alone on the
# machine. Run from the repository root.
set -u
export OMP_NUM_THREADS=1
. .venv/bin/activate
dspark-viz eval --drafters runs/emb4/old-s3/gemma3-270m-dspark:dspark,default:dspark,none \
  --prompts code,math,prose --samples 4 --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 \
  --policy hardware:bench/embedded2/cpu_curve.json --json bench/embedded4/eval_hardware.json --quiet \
  > bench/embedded4/eval_hardware.log 2>&1
