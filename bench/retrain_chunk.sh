#!/usr/bin/env bash
# Issue 21 (RECIPE step 8): train both embedded drafters on chunk K of N of the regenerated data.
#   bash bench/retrain_chunk.sh K N [MAX_MINUTES]
# Chunk K holds every N-th record of data/regen/embedded (records K, K+N, …), so each chunk is a
# sample of the whole mix. Chunk 0 starts from the shipped drafters, re-indexed to the data's own
# draft vocabulary (data/regen/vocab-16384.json, `prepare regen-vocab`); chunk K > 0 starts from
# chunk K−1's drafters, committed as bf16 under data/regen/drafters/. Every stage resumes: the
# sample files are kept, the caches and the training runs pick up where they stopped (runs/ is not
# committed and does not outlive the machine — so a chunk is done within one session).
# Stages run two processes side by side (one thread each): cache halves, then DSpark and DFlash
# with one step per 8 records (one pass over the chunk). MAX_MINUTES bounds each training run
# (`train --max-minutes`: the drafter is saved as it is, flagged stopped_at_deadline); or set
# DEADLINE (any `date -d` time) to end training by then, however long the cache stage took.
# Wall time of every stage goes to $R/chunkK/times.txt.
set -euo pipefail
K=${1:?chunk index}; N=${2:?number of chunks}; MAXMIN=${3:-}
[ "$K" -ge 0 ] && [ "$K" -lt "$N" ] || { echo "chunk index must be in [0, $N)" >&2; exit 2; }
export OMP_NUM_THREADS=1
R=${R:-runs/retrain}; A=dspark_viz/assets/drafters; D=data/regen/drafters; C=$R/chunk$K
VOCAB=data/regen/vocab-16384.json
command -v dspark-viz > /dev/null || { echo "dspark-viz not on PATH: activate the environment (. .venv/bin/activate)" >&2; exit 2; }
if [ -n "${DEADLINE:-}" ]; then  # checked before any work: a past or unreadable time stops here
  END=$(date -d "$DEADLINE" +%s) || { echo "DEADLINE $DEADLINE: not a time date -d reads" >&2; exit 2; }
  [ "$END" -gt "$(date +%s)" ] || { echo "DEADLINE $DEADLINE has passed" >&2; exit 2; }
fi
mkdir -p "$C" "$D"
TRAIN="--target embedded --block-size 7 --batch-size 8 --micro-batch 8 --num-anchors 16 --warmup-ratio 0.04
  --min-lr-ratio 0.1 --chunk-rows 1024 --threads 1 --no-progress --lr 6e-4 --max-len 384 --seed $K
  --log-every 20 --ckpt-every 50"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$C/times.txt"; }

# The chunks partition one fixed set of shards: chunk 0 records it, later chunks check it.
SET=$(cd data/regen/embedded && sha256sum shard-*.safetensors | sha256sum | cut -c1-16)
if [ "$K" -eq 0 ] && [ ! -s "$D/shard-set.txt" ]; then echo "$SET $N" > "$D/shard-set.txt"; fi
[ "$(cat "$D/shard-set.txt")" = "$SET $N" ] || {
  echo "data/regen/embedded or N changed since chunk 0 ($D/shard-set.txt): the chunks would overlap" >&2; exit 2; }
[ -s "$VOCAB" ] || dspark-viz prepare regen-vocab --out data/regen/embedded --to "$VOCAB"
stamp "chunk $K/$N: samples"
for x in 0 1; do  # the chunk's records, halved for two cache processes
  if [ ! -s "$C/s$x.jsonl" ]; then
    dspark-viz prepare regen-export --out data/regen/embedded \
      --to "$C/s$x.jsonl.tmp" --parts $((2 * N)) --part $((K + x * N))
    mv "$C/s$x.jsonl.tmp" "$C/s$x.jsonl"
  fi
done
stamp "cache"
pids=()
for x in 0 1; do
  dspark-viz prepare cache --samples "$C/s$x.jsonl" --out "$C/cache$x" --target embedded --dtype bf16 \
    --max-len 384 --shard-tokens 65536 --no-progress > "$C/cache$x.log" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done  # a failed stage stops the script (set -e)
STEPS=$(( ($(cat "$C/s0.jsonl" "$C/s1.jsonl" | wc -l) + 7) / 8 ))
if [ -n "${DEADLINE:-}" ]; then
  MAXMIN=$(( (END - $(date +%s)) / 60 - 2 ))
  [ "$MAXMIN" -ge 1 ] || { echo "DEADLINE $DEADLINE leaves no time to train" >&2; exit 2; }
fi
stamp "train $STEPS steps${MAXMIN:+ (at most $MAXMIN min)}"
pids=()
for m in dspark dflash; do
  if [ "$K" -eq 0 ]; then INIT="--init $A/gemma3-270m-$m --draft-vocab $VOCAB"
  else INIT="--init $D/chunk$((K - 1))-$m"; fi
  EXTRA=""; [ $m = dflash ] && EXTRA="--alpha-ce 0.1 --alpha-tv 0.9"
  dspark-viz train --cache "$C/cache0" --cache "$C/cache1" --out "$C/run-$m" --method $m $INIT $EXTRA \
    --steps "$STEPS" $TRAIN ${MAXMIN:+--max-minutes $MAXMIN} > "$C/train-$m.log" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for m in dspark dflash; do dspark-viz export "$C/run-$m/drafter" "$D/chunk$K-$m" --dtype bf16; done
stamp "done"
