#!/bin/bash
# session 5 (issue 6): the hardware-aware scheduler with the shipped DSpark drafter, alone on the
# machine, one thread as in session 4. Two fresh profiles of this machine first: the verify pass
# alone (the curve sessions 2–4 used, re-measured) and whole speculative steps (drafting γ = 7 +
# the verify pass: `profile --drafter default`). Then one eval per curve, each with plain
# decoding measured in the same run on the same prompts. Run from the repository root.
set -u
export OMP_NUM_THREADS=1
. .venv/bin/activate
O=bench/embedded5
dspark-viz profile --target embedded --batch-sizes 1,2,3,4,5,6,7,8 --repeats 15 \
  --out $O/cpu_curve_verify.json > $O/profile_verify.log 2>&1
dspark-viz profile --target embedded --drafter default --gamma 7 --batch-sizes 1,2,3,4,5,6,7,8 \
  --repeats 15 --out $O/cpu_curve_step.json > $O/profile_step.log 2>&1
for c in step verify; do
  dspark-viz eval --drafters default:dspark,none --prompts code,math,prose --samples 4 \
    --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 --policy hardware:$O/cpu_curve_$c.json \
    --json $O/eval_hardware_$c.json --quiet > $O/eval_hardware_$c.log 2>&1
done
