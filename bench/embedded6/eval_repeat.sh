#!/bin/bash
# session 6 (issue 6): a second pair of 1-thread runs, envelope (`hardware`) and raw curve (`alg1`),
# on the same curve as eval_hardware.sh, alone on the machine, after the stage-5 STS refit.
set -u
. .venv/bin/activate
export OMP_NUM_THREADS=1
O=bench/embedded6
for p in alg1 hardware; do
  dspark-viz eval --drafters default:dspark,none --prompts code,math,prose --samples 4 \
    --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 --policy $p:$O/cpu_curve_step_1t.json \
    --json $O/eval_${p}_1t_rep.json --quiet > $O/eval_${p}_1t_rep.log 2>&1
done
