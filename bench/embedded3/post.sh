#!/bin/bash
# session 3, after stage 3 (runs/emb3/stage3b.sh): two branches on the two cores —
#   A: the T = 0 confidence head on fresh turn-form requests → STS calibration → hardware-aware eval
#   B: side-by-side fixed-γ eval (stage 3 vs the stage-2 drafters shipped before) → held-out metrics
# Figures land in bench/embedded3/.
set -u
cd /work/main
. .venv/bin/activate
export OMP_NUM_THREADS=1
R=runs/emb3
B=bench/embedded3
A=dspark_viz/assets/drafters
mkdir -p $B
stamp() { echo "$(date -u +%FT%TZ) $*" >> $R/times.log; }
while ! grep -q s3-train-done $R/times.log; do sleep 20; done
python -m dspark_viz.train.export $R/run-s3-dflash/drafter $R/drafter-s3-dflash > $B/export.log 2>&1
branch_a() {
  local s=$(date +%s)
  # the confidence head alone, T = 0 labels, on 441 fresh requests in the form eval decodes (never in
  # the backbone's data; runs/emb3/confdata2.sh)
  nice -n 5 dspark-viz train --cache $R/cache-conf2 --target embedded --out $R/run-s3-conf \
    --method dspark --init $R/run-s3-dspark/drafter --train-only confidence --conf-label greedy --block-size 7 \
    --steps 300 --batch-size 8 --micro-batch 8 --num-anchors 16 --lr 1e-3 --warmup-ratio 0.04 \
    --min-lr-ratio 0.1 --chunk-rows 1024 --seed 3 --log-every 10 --ckpt-every 100 --keep-ckpts 1 \
    --max-len 384 --threads 1 --no-progress > $B/train-conf.log 2>&1
  python -m dspark_viz.train.export $R/run-s3-conf/drafter $R/drafter-s3-dspark >> $B/export.log 2>&1
  stamp "s3 conf head $(( $(date +%s)-s )) s"; s=$(date +%s)
  nice -n 5 dspark-viz calibrate --drafter $R/drafter-s3-dspark --prompts none --data runs/emb/prompts/val.jsonl \
     --max-new-tokens 160 --temperature 0 --gamma 7 --seed 0 --holdout 0.4 --batch-size 8 \
     --json $B/calibration_report.json --plots $B/calibration_plots --quiet > $B/calibrate.log 2>&1
  stamp "s3 calibrate $(( $(date +%s)-s )) s"; s=$(date +%s)
  dspark-viz eval --drafters $R/drafter-s3-dspark:dspark,default:dspark,none --prompts code,math,prose --samples ${SAMPLES:-4} \
     --max-new-tokens 64 --temperatures 0 --gamma 7 --seed 0 --policy hardware:bench/embedded2/cpu_curve.json \
     --json $B/eval_hardware.json --quiet > $B/eval_hardware.log 2>&1
  stamp "s3 eval_hardware $(( $(date +%s)-s )) s"
}
branch_b() {
  local s=$(date +%s)
  nice -n 5 dspark-viz eval --drafters $R/run-s3-dspark/drafter:dspark,$R/drafter-s3-dflash:dflash,default:dspark,default:dflash,none \
     --prompts code,math,prose --samples ${SAMPLES:-4} --max-new-tokens 64 --temperatures 0,1 --gamma 7 --seed 0 \
     --json $B/eval_fixed.json --plots $B/eval_plots --quiet > $B/eval_fixed.log 2>&1
  stamp "s3 eval_fixed $(( $(date +%s)-s )) s"; s=$(date +%s)
  python bench/heldout_embedded.py --cache $R/cache-conf2 $R/run-s3-dspark/drafter $R/drafter-s3-dflash \
     $A/gemma3-270m-dspark $A/gemma3-270m-dflash --json $B/heldout.json > $B/heldout.log 2>&1
  stamp "s3 heldout $(( $(date +%s)-s )) s"
}
branch_a & branch_b & wait
stamp s3-post-done
