#!/bin/bash
# session 3: confidence-head data in the form the eval and calibration decode (the request itself,
# no raw-text wrapper): the 293 fresh stdlib / pydoc / arithmetic prompts as turns + 300 new tasks
set -u
export OMP_NUM_THREADS=1
DV=../../.venv/bin/dspark-viz
stamp() { echo "$(date -u +%FT%TZ) $*" >> times.log; }
stamp confdata2-start
nice -n 5 $DV prepare regenerate --prompts conf2-prompts.jsonl --out regen-conf2.jsonl --target embedded \
  --template raw --max-new-tokens 128 --max-prompt-tokens 256 --batch-size 24 --temperature 0 \
  --no-progress > regen-conf2.log 2>&1
stamp regen-conf2-done $(wc -l < regen-conf2.jsonl)
nice -n 5 $DV prepare cache --samples regen-conf2.jsonl --out cache-conf2 --target embedded --dtype bf16 \
  --max-len 384 --shard-tokens 4096 --no-progress > cache-conf2.log 2>&1
stamp cache-conf2-done
