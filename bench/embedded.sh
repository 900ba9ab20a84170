#!/bin/bash
# Regenerate the shipped embedded drafters' headline figures (bench/results_embedded.md) from
# today's code, on this machine. Run from the repository root:
#
#     bash bench/embedded.sh                      # every section, into out/embedded/
#     OUT=out/emb bash bench/embedded.sh eval     # some sections: eval tasks wallclock calibration heldout
#     SMOKE=1 bash bench/embedded.sh eval         # a tiny run of the same commands (checks the script)
#     DSPARK=DIR DFLASH=DIR WRITE_CALIBRATION=1 OUT=out/cand bash bench/embedded.sh calibration eval …
#                                                 # candidate drafters instead of the shipped ones
#
# DSPARK and DFLASH name the drafter directories measured (default: the shipped
# gemma3-270m-{dspark,dflash}). The calibration section fits STS with --dry-run unless
# WRITE_CALIBRATION=1, which writes $DSPARK/calibration.json (run calibration before wallclock:
# the scheduler reads the calibrated a_k). heldout scores the shipped drafters and, when DSPARK or
# DFLASH is given, the candidates beside them on the same cache.
#
# Sections and their cost on an unshared 2-core CPU (one process per core at most; 2026-12-03):
#   eval         τ, acceptance, conditional acceptance at fixed ℓ = γ = 7, T = 0 and 1:
#                DSpark vs the DFlash ablation vs plain decoding, 4 built-in prompts per domain (≈ 9 min)
#   tasks        τ on 10 held-out builtin:tasks requests (≈ 4 min)
#   wallclock    the hardware-aware scheduler against plain decoding in one run, on a freshly
#                profiled whole-step curve, at 1 thread (`hardware` and `alg1`) and 2 (≈ 7 min;
#                run it alone on the machine)
#   calibration  the 569 calibration prompts of RECIPE.md steps 6 and 9 rebuilt, decoded (two processes),
#                STS fitted with `--dry-run` (the shipped calibration.json is left alone), and the
#                same fit over 40 prompt splits (≈ 66 min)
#   heldout      teacher-forced acceptance on the 441 requests of RECIPE.md step 4, which no
#                backbone trained on: regenerate, cache, score (≈ 20 min)
# Every command also lands in $OUT/commands.log, with its wall time.
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then OUT=${OUT:-out/embedded-smoke}; else OUT=${OUT:-out/embedded}; fi
SECTIONS=${*:-eval tasks wallclock calibration heldout}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x .venv/bin/python ]; then V=.venv/bin/; else V=; fi   # the repository's venv when there is one
DV=${DV:-${V}dspark-viz}
PY=${PY:-${V}python}
P="$PY bench/embedded_prompts.py"

if [ "${SMOKE:-0}" = 1 ]; then   # same commands, tiny sizes
  SAMPLES=1; NEW=8; TEMPS=0; TASKS=1; CAL_NEW=8; CAL_CAP=2; REPEATS=1; BSIZES=1,2,4; SPLITS=3; HO_CAP=2
else
  SAMPLES=4; NEW=64; TEMPS=0,1; TASKS=10; CAL_NEW=160; CAL_CAP=0; REPEATS=15; BSIZES=1,2,3,4,5,6,7,8; SPLITS=40; HO_CAP=0
fi
A=dspark_viz/assets/drafters
DSPARK=${DSPARK:-default}; DFLASH=${DFLASH:-default}
for d in "$DSPARK" "$DFLASH"; do
  [ "$d" = default ] || [ -s "$d/model.safetensors" ] || { echo "no drafter in $d (model.safetensors)" >&2; exit 2; }
done
WRITE_CALIBRATION=${WRITE_CALIBRATION:-0}
if [ "$WRITE_CALIBRATION" = 1 ] && [ "$DSPARK" = default ]; then
  echo "WRITE_CALIBRATION=1 writes \$DSPARK/calibration.json: name a candidate DSPARK=DIR (the shipped file is refitted by RECIPE.md step 9)" >&2; exit 2
fi
mkdir -p "$OUT"  # after the checks: bad settings leave nothing behind
EVAL="--prompts code,math,prose --samples $SAMPLES --max-new-tokens $NEW --gamma 7 --seed 0 --quiet"

run() {  # log and time one command
  local s; s=$(date +%s)
  echo "\$ $*" | tee -a "$OUT/commands.log"
  "$@"
  echo "  ($(( $(date +%s) - s )) s)" | tee -a "$OUT/commands.log"
}

capped() {  # copy JSONL file $1 to $3, its first $2 lines only (0: all)
  mkdir -p "$(dirname "$3")"
  if [ "$2" = 0 ]; then cp "$1" "$3"; else head -n "$2" "$1" > "$3"; fi
}

wait_all() {  # wait for the given background jobs; fail if one failed
  local p rc=0
  for p in "$@"; do wait "$p" || rc=$?; done
  return $rc
}

prompt_files() {  # the prompt files of RECIPE.md steps 1, 3, 4, 5 and 6 (no model)
  local R=$OUT/prompts
  [ -f "$R/s6/calset4_2.jsonl" ] && return 0
  run $DV prepare prompts --source builtin:stdlib --source builtin:pydoc --source builtin:arithmetic \
    --source builtin:instructions --n 400 --seed 0 --out $R/s1/prompts
  run $DV prepare prompts --source builtin:tasks --n 1500 --seed 0 --val-fraction 0.03 --out $R/s3/prompts-tasks
  run $DV prepare prompts --source builtin:stdlib --source builtin:pydoc --source builtin:arithmetic \
    --n 150 --seed 11 --val-fraction 0 --out $R/s3/conf-src
  run $P fresh $R/s3/conf-src/train.jsonl $R/s3/conf-prompts.jsonl --seen $R/s1/prompts/*.jsonl
  run $P conf3 $R/s3/conf-prompts.jsonl $R/s3/prompts-tasks $R/s3/conf2-prompts.jsonl
  run $DV prepare prompts --source builtin:stdlib --source builtin:pydoc --source builtin:arithmetic \
    --source builtin:instructions --n 400 --seed 23 --val-fraction 0 --out $R/s4/fresh
  run $P sets4 $R/s4/fresh/train.jsonl --seen $R/s1/prompts/*.jsonl $R/s3/conf-prompts.jsonl \
    $R/s3/conf2-prompts.jsonl --calib-b $R/s4/calib-b.jsonl --conf-a $R/s4/conf-a.jsonl
  mkdir -p $R/s6 && cat $R/s1/prompts/val.jsonl $R/s4/calib-b.jsonl > $R/s6/calset.jsonl
  run $P halves $R/s6/calset.jsonl $R/s6/calset_1.jsonl $R/s6/calset_2.jsonl --seed 0
  run $P calset $R $R/s6/calset3
  run $P calset $R $R/s6/calset4 --seed 71 --mix stdlib=130,pydoc=0,arithmetic=80,instructions=0
}

section_eval() {
  run $DV eval --drafters $DSPARK:dspark,$DFLASH:dflash --temperatures $TEMPS $EVAL --json $OUT/eval_fixed.json
}

section_tasks() {
  run $DV prepare prompts --source builtin:tasks --n 1500 --seed 0 --val-fraction 0.03 --out $OUT/prompts-tasks
  run $DV eval --drafters $DSPARK:dspark --temperatures 0 --prompts none --data $OUT/prompts-tasks/val.jsonl \
    --samples $TASKS --max-new-tokens $(( NEW * 2 )) --gamma 7 --seed 0 --quiet --json $OUT/eval_tasks.json
}

section_wallclock() {
  for t in 1 2; do
    OMP_NUM_THREADS=$t run $DV profile --target embedded --drafter $DSPARK --gamma 7 --batch-sizes $BSIZES \
      --repeats $REPEATS --out $OUT/cpu_curve_step_${t}t.json
    pols="hardware alg1"; [ $t = 2 ] && pols="hardware"
    for p in $pols; do
      OMP_NUM_THREADS=$t run $DV eval --drafters $DSPARK:dspark,none --temperatures 0 $EVAL \
        --policy $p:$OUT/cpu_curve_step_${t}t.json --json $OUT/eval_${p}_${t}t.json
    done
  done
}

section_calibration() {
  prompt_files
  local s h pids traces=()
  for s in calset calset3 calset4; do
    pids=()
    for h in 1 2; do
      capped $OUT/prompts/s6/${s}_$h.jsonl $CAL_CAP $OUT/data/${s}_$h.jsonl
      run $DV calibrate --drafter $DSPARK --prompts none --data $OUT/data/${s}_$h.jsonl --max-new-tokens $CAL_NEW \
        --temperature 0 --gamma 7 --seed 0 --batch-size 8 --dry-run --save-traces $OUT/traces-$s/part$h --quiet &
      pids+=($!)
    done
    wait_all "${pids[@]}"
    traces+=(--traces $OUT/traces-$s)
  done
  local write=--dry-run; [ "$WRITE_CALIBRATION" = 1 ] && write=
  run $DV calibrate --drafter $DSPARK "${traces[@]}" --gamma 7 --temperature 0 --seed 0 --holdout 0.4 \
    $write --json $OUT/calibration_report.json --plots $OUT/calibration_plots --no-png --quiet
  run $PY bench/embedded_splits.py $OUT/traces-calset $OUT/traces-calset3 $OUT/traces-calset4 \
    --holdout 0.4 --splits $SPLITS --json $OUT/splits.json
}

section_heldout() {
  prompt_files
  local F=$OUT/data/conf2-prompts.jsonl
  capped $OUT/prompts/s3/conf2-prompts.jsonl $HO_CAP $F
  run $DV prepare regenerate --prompts $F --out $OUT/regen-conf2.jsonl --target embedded --template raw \
    --max-new-tokens $(( NEW * 2 )) --max-prompt-tokens 256 --batch-size 24 --temperature 0 --no-progress
  run $DV prepare cache --samples $OUT/regen-conf2.jsonl --out $OUT/cache-conf2 --target embedded \
    --dtype bf16 --max-len 384 --shard-tokens 4096 --no-progress
  local dirs=($A/gemma3-270m-dspark $A/gemma3-270m-dflash) d
  for d in "$DSPARK" "$DFLASH"; do [ "$d" = default ] || dirs+=("$d"); done
  run $PY bench/heldout_embedded.py --cache $OUT/cache-conf2 "${dirs[@]}" --json $OUT/heldout.json
}

for s in $SECTIONS; do
  case $s in
    eval|tasks|wallclock|calibration|heldout) section_$s ;;
    *) echo "unknown section $s (known: eval tasks wallclock calibration heldout)" >&2; exit 2 ;;
  esac
done
echo "figures in $OUT (commands and wall times: $OUT/commands.log)"
