#!/usr/bin/env bash
# Quickstart (CPU, no GPU, no network): EGSPO-SA on the shipped tiny LLaDA (the native LLaDA class that
# loads LLaDA-8B, with tiny trained weights), on Sudoku.
#
#   bash scripts/quickstart.sh            # after `pip install -e .` (see the README)
#
# 1. evaluates checkpoints/tiny-llada on the 500 held-out test puzzles,
# 2. trains EGSPO-SA with LoRA from it (STEPS optimizer steps, one torch thread),
# 3. evaluates the trained adapter on the same puzzles at the same sampler settings
#    (the model's dllmrl.json: compact prompt, gen_len 32, 16 steps, block 32, greedy),
# 4. prints the accuracy before and after, and the paired difference with a bootstrap 95% interval
#    (resampling the 500 puzzles, each puzzle's after-score paired with its before-score).
# Everything goes to runs/quickstart-s<SEED>/ (OUT=... to change); rerunning resumes or skips finished parts.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

MODEL=${MODEL:-checkpoints/tiny-llada}
OUT=${OUT:-runs/quickstart-s${SEED:-1}}
STEPS=${STEPS:-150}
# Seed 1 makes the shipped adapter (checkpoints/tiny-llada-adapters, subfolder sudoku/egspo-sa).
SEED=${SEED:-1}
start=$(date +%s)
mkdir -p "$OUT"

echo "== 1/3 base model: dllmrl eval sudoku --model $MODEL --split test"
[ -f "$OUT/eval-before/results.json" ] || \
  dllmrl eval sudoku --model "$MODEL" --split test --batch-size 64 --device cpu --out "$OUT/eval-before"

echo "== 2/3 EGSPO-SA: $STEPS optimizer steps (progress below; about 5 s a step on a free core)"
resume=(); [ -d "$OUT/train/checkpoints" ] && resume=(--resume)   # the final adapter is written last
[ -f "$OUT/train/adapter/adapter_model.safetensors" ] || \
  dllmrl train sudoku --model "$MODEL" --method egspo-sa --lambda 1 --k-steps 8 \
    -G 8 --batch-size 64 --grad-accum 8 --temperature 1.0 \
    --lora-r 16 --lora-alpha 32 --lr 1e-3 --warmup-steps 3 --beta 0 --reward-weight correct=1 \
    --max-steps "$STEPS" --seed "$SEED" --save-every 20 --log-every 10 --device cpu \
    -o "$OUT/train" "${resume[@]}"

echo "== 3/3 trained adapter: dllmrl eval sudoku --model $MODEL --adapter $OUT/train/adapter --split test"
[ -f "$OUT/eval-after/results.json" ] || \
  dllmrl eval sudoku --model "$MODEL" --adapter "$OUT/train/adapter" --split test --batch-size 64 --device cpu \
    --out "$OUT/eval-after"

python3 - "$OUT" "$(( $(date +%s) - start ))" "$MODEL" <<'EOF'
import json, sys
from dllmrl.evaluation.stats import paired_bootstrap, paired_by_id
out, secs, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(name):
    r = json.load(open(f"{out}/{name}/results.json"))["lengths"][0]
    recs = [json.loads(x) for x in open(f"{out}/{name}/records.jsonl") if x.strip()]
    return r["accuracy"], r["metrics"]["cell_acc"], r["correct"], r["n"], {x["id"]: float(x["correct"]) for x in recs}
(a0, c0, k0, n, s0), (a1, c1, k1, _, s1) = get("eval-before"), get("eval-after")
ci = paired_bootstrap(*paired_by_id(s0, [s1]), n=10_000, seed=0)
print()
print(f"Sudoku 4x4, {n} held-out test puzzles, greedy (the model's dllmrl.json settings):")
print(f"  before ({model}):  solved {a0:6.1%} ({k0}/{n})   cell accuracy {c0:6.1%}")
print(f"  after  (+ EGSPO-SA adapter):  solved {a1:6.1%} ({k1}/{n})   cell accuracy {c1:6.1%}")
print(f"  change: solved {100*ci.diff:+5.1f} points (paired bootstrap 95% interval {100*ci.low:+.1f} to {100*ci.high:+.1f})"
      f"   cell accuracy {100*(c1-c0):+5.1f} points")
print(f"  wall time {secs // 60} min {secs % 60} s; adapter: {out}/train/adapter")
EOF
