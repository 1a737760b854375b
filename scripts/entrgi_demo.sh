#!/usr/bin/env bash
# CPU-scale demonstration of reward-guided sampling (issue 8: EntRGi and its baselines).
#
#   scripts/entrgi_demo.sh          # about half an hour on one CPU core
#
# 1. a tiny reward model trained on checkpoints/tiny-sudoku's own samples of generated *training*
#    puzzles, labelled by the Sudoku verifier -> checkpoints/tiny-sudoku-reward (skipped if present);
# 2. a validation sweep (never test) of the step size eta of each gradient method and of best-of-n's
#    sampling temperature;
# 3. the frozen tiny-sudoku model on the test splits under none / expectation / aps / entrgi /
#    best-of-n, each at its validation-best setting, at equal reward-model calls per prompt
#    (guided: 16 steps x 1 gradient step = 16 calls; best-of-n: N = 16 samples, one call each);
# 4. results/entrgi/results.{md,json} (scripts/summarize_entrgi.py).
#
# Every eval resumes: rerunning the script only generates what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

M=checkpoints/tiny-sudoku
RM=checkpoints/tiny-sudoku-reward
OUT=runs/entrgi
BS=(--batch-size 64)
VAL=(--split validation --limit 256)   # tuning split: generated puzzles disjoint from test
LRS="0.1 0.3 1 3"                        # guidance-lr grid (same grid for every gradient method)
TEMPS="0.5 0.7 1.0"                    # best-of-n sampling temperature grid
K=1                                    # --guidance-steps; reward calls per prompt = 16 x K

# 1. Reward model.
if [ ! -f "$RM/dllmrl_reward.json" ]; then
  dllmrl reward-model sudoku --model "$M" --output "$RM" \
    --num-prompts 2048 --samples-per-prompt 4 --temperature 1.0 --target correct --epochs 8
fi

ev() { dllmrl eval sudoku --model "$M" "${BS[@]}" "$@"; }
guided() { local method=$1; shift; ev --guidance "$method" --reward-model "$RM" --guidance-steps "$K" "$@"; }

# 2. Validation sweep.
ev "${VAL[@]}" --out "$OUT/val-none"
for method in expectation aps entrgi; do
  for lr in $LRS; do
    guided "$method" "${VAL[@]}" --guidance-lr "$lr" --out "$OUT/val-$method-lr$lr"
  done
done
for t in $TEMPS; do
  guided best-of-n "${VAL[@]}" --temperature "$t" --out "$OUT/val-best-of-n-t$t"
done

# 3. Test: each method at its validation-best setting, on test256 (the eval default) and the full test split.
for split in test256 test; do
  ev --split "$split" --out "$OUT/$split-none"
  for method in expectation aps entrgi; do
    lr=$(python3 scripts/summarize_entrgi.py --pick "$method")
    guided "$method" --split "$split" --guidance-lr "$lr" --out "$OUT/$split-$method"
  done
  t=$(python3 scripts/summarize_entrgi.py --pick best-of-n)
  guided best-of-n --split "$split" --temperature "$t" --out "$OUT/$split-best-of-n"
done

# 4. Summary.
python3 scripts/summarize_entrgi.py
