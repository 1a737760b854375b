#!/usr/bin/env bash
# CPU-scale demonstration of reward-guided sampling (issue 8: EntRGi and its baselines).
#
#   scripts/entrgi_demo.sh          # about 50 minutes on one shared CPU core (reward model ~9)
#   (the first round ran on the ModernBERT tiny-sudoku with tiny-sudoku-reward; that pair is retired,
#    its results are kept in results/entrgi)
#   EXTRAS=0 scripts/entrgi_demo.sh # steps 1-3 and 5 only (no x-* runs)
#
# 1. a tiny reward model trained on MODEL's own samples of generated *training* puzzles, labelled by
#    the Sudoku verifier -> RM (default checkpoints/tiny-llada-reward; skipped if present);
# 2. a validation sweep (never test) of the step size eta of each gradient method and of best-of-n's
#    sampling temperature;
# 3. the frozen MODEL on the test splits under none / expectation / aps / entrgi /
#    best-of-n, each at its validation-best setting, at equal reward-model calls per prompt
#    (guided: 16 steps x 1 gradient step = 16 calls; best-of-n: N = 16 samples, one call each);
# 4. extra runs (x-*): more guidance steps, other seeds, best-of-n with few candidates;
# 5. RESULTS/results.{md,json} (scripts/summarize_entrgi.py; default results/entrgi-llada).
#
# Every eval resumes: rerunning the script only generates what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

M=${MODEL:-checkpoints/tiny-llada}
RM=${RM:-checkpoints/tiny-llada-reward}
OUT=${OUT:-runs/entrgi-llada}
RESULTS=${RESULTS:-results/entrgi-llada}
EXTRAS=${EXTRAS:-1}
SUMMARY=(python3 scripts/summarize_entrgi.py --runs "$OUT" --out "$RESULTS" --model "$M" --reward-model "$RM")
BS=(--batch-size 64)
VAL=(--split validation --limit 256)   # tuning split: generated puzzles disjoint from test
LRS="0.01 0.03 0.1 0.3 1 3"              # guidance-lr grid (same grid for every gradient method)
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
    lr=$("${SUMMARY[@]}" --pick "$method")
    guided "$method" --split "$split" --guidance-lr "$lr" --out "$OUT/$split-$method"
  done
  t=$("${SUMMARY[@]}" --pick best-of-n)
  guided best-of-n --split "$split" --temperature "$t" --out "$OUT/$split-best-of-n"
done

# 4. Extras (named x-*; listed apart in the summary, never used for a choice).
if [ "$EXTRAS" = 1 ]; then
lr_e=$("${SUMMARY[@]}" --pick entrgi)
lr_a=$("${SUMMARY[@]}" --pick aps)
t=$("${SUMMARY[@]}" --pick best-of-n)
# a) more gradient steps per denoising step (validation): k = 2, 4 (16 k reward calls per prompt)
for method in expectation entrgi; do
  for k in 2 4; do
    for lr in 0.1 0.3; do
      ev "${VAL[@]}" --guidance "$method" --reward-model "$RM" --guidance-steps "$k" --guidance-lr "$lr" \
        --out "$OUT/x-val-$method-k$k-lr$lr"
    done
  done
done
# b) the seed spread of the stochastic methods on test (entrgi/aps draw their hard embeddings; best-of-n samples)
for seed in 1 2; do
  guided entrgi --split test --guidance-lr "$lr_e" --seed "$seed" --out "$OUT/x-test-entrgi-seed$seed"
  guided aps --split test --guidance-lr "$lr_a" --seed "$seed" --out "$OUT/x-test-aps-seed$seed"
  guided best-of-n --split test256 --temperature "$t" --seed "$seed" --out "$OUT/x-test256-best-of-n-seed$seed"
done
# c) best-of-n with few candidates: N = 2, 4 (nearer the guided runs' 16 DLLM forwards per prompt)
for n in 2 4; do
  guided best-of-n --split test --temperature "$t" --best-of-n "$n" --out "$OUT/x-test-best-of-n-n$n"
done

fi

# 5. Summary.
"${SUMMARY[@]}"
