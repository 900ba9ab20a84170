#!/bin/bash
# after the second training pass: ship, held-out metrics, calibrate ∥ fixed-γ eval, then the
# hardware-aware eval (wall clock, alone on the machine as far as this script goes)
cd /work/main
. .venv/bin/activate
export OMP_NUM_THREADS=1
A=dspark_viz/assets/drafters
B=bench/embedded2
R=runs/emb2
mkdir -p $B
t() { date +%s; }
log() { echo "$(date -u +%FT%TZ) $*" >> $R/times.log; }
[ -d $R/old-dspark ] || { cp -r $A/gemma3-270m-dspark $R/old-dspark; cp -r $A/gemma3-270m-dflash $R/old-dflash; }
s=$(t); python -m dspark_viz.train.export $R/run-dspark/drafter $A/gemma3-270m-dspark > $B/export.log 2>&1
python -m dspark_viz.train.export $R/run-dflash/drafter $A/gemma3-270m-dflash >> $B/export.log 2>&1; log "export $(( $(t)-s )) s"
s=$(t)
nice -n 5 dspark-viz calibrate --drafter $A/gemma3-270m-dspark --prompts none --data runs/emb/prompts/val.jsonl \
   --max-new-tokens 160 --temperature 0 --gamma 7 --seed 0 --holdout 0.4 --json $B/calibration_report.json \
   --plots $B/calibration_plots --quiet > $B/calibrate.log 2>&1 &
P1=$!
nice -n 5 dspark-viz eval --drafters default:dspark,default:dflash,$R/old-dspark:dspark,$R/old-dflash:dflash,none --prompts code,math,prose --samples ${SAMPLES:-4} \
   --max-new-tokens 64 --temperatures 0,1 --gamma 7 --seed 0 --json $B/eval_fixed.json --plots $B/eval_plots --quiet > $B/eval_fixed.log 2>&1
log "eval_fixed $(( $(t)-s )) s"
wait $P1; log "calibrate done $(( $(t)-s )) s"
s=$(t); dspark-viz eval --drafters default:dspark,none --prompts code,math,prose --samples ${SAMPLES:-4} \
   --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 --policy hardware:$B/cpu_curve.json --json $B/eval_hardware.json --quiet > $B/eval_hardware.log 2>&1
log "eval_hardware $(( $(t)-s )) s"
[ -d $R/cache-val ] && { s=$(t); python bench/heldout_embedded.py --cache $R/cache-val $A/gemma3-270m-dspark $A/gemma3-270m-dflash $R/old-dspark $R/old-dflash --json $B/heldout.json > $B/heldout.log 2>&1; log "heldout $(( $(t)-s )) s"; }
log "post done"
