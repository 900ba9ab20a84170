#!/bin/bash
# session 6 (issue 6): the hardware-aware scheduler with admission on the curve's envelope
# (`hardware`, new default) against the paper's algorithm on the raw curve (`alg1`), the shipped
# DSpark drafter, alone on the machine. One thread first (as sessions 4–5): a fresh whole-step
# profile, then one eval per policy, each with plain decoding in the same run on the same prompts.
# Then both cores (OMP_NUM_THREADS=2, torch's default here): a profile at 2 threads and the envelope
# eval. Run from the repository root. Session 7 re-ran it after the stage-6 STS refit as
# `bash bench/embedded6/eval_hardware.sh bench/embedded7` (arguments: output folder, thread counts).
set -u
. .venv/bin/activate
O=${1:-bench/embedded6}
THREADS=${2:-1 2}
for t in $THREADS; do
  export OMP_NUM_THREADS=$t
  dspark-viz profile --target embedded --drafter default --gamma 7 --batch-sizes 1,2,3,4,5,6,7,8 \
    --repeats 15 --out $O/cpu_curve_step_${t}t.json > $O/profile_step_${t}t.log 2>&1
  pols="hardware alg1"; [ $t = 2 ] && pols="hardware"
  for p in $pols; do
    dspark-viz eval --drafters default:dspark,none --prompts code,math,prose --samples 4 \
      --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 --policy $p:$O/cpu_curve_step_${t}t.json \
      --json $O/eval_${p}_${t}t.json --quiet > $O/eval_${p}_${t}t.log 2>&1
  done
done
