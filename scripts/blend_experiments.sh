#!/usr/bin/env bash
# Steering at sampling time on the shared tiny base (issue 15): the two-task front and the strength dial.
#
#   bash scripts/blend_experiments.sh front     # Sudoku solved vs Countdown correct, w on Sudoku in {0,.25,.5,.75,1}
#   bash scripts/blend_experiments.sh dial      # one adapter at lambda in {0,.25,.5,1,1.5,2}: accuracy and KL to base
#   bash scripts/blend_experiments.sh beta      # adapters trained with beta in {0.01,0.04,0.16}: accuracy and KL
#   python3 scripts/summarize_blend.py          # results/blend/{front,dial}.{md,json,png}
#
# front, for each w (weight on the Sudoku adapter, 1 - w on the Countdown one), both full test splits, greedy at
# the model's dllmrl.json settings:
#   logit        --adapter sudoku=S --adapter countdown=C --blend sudoku=w,countdown=1-w   (DB-MPA: sum of logits)
#   random-step  the same with --blend-mode random-step                                     (DB-MPA-LS)
#   linear       dllmrl merge --how cat --weights w,1-w   (exactly w*dW_S + (1-w)*dW_C; peft's 'linear' is not:
#                it mixes the LoRA factors, so (A, A) at (.5, .5) gives 2 dW_A)
#   ties         dllmrl merge --how ties --density $DENSITY --weights w,1-w
#   multi-task   one adapter trained by RL on sudoku+countdown (the retraining blending avoids), MULTI_STEPS steps
#                (the single-task recipe of scripts/compare.sh, egspo-sa at Sudoku's chosen learning rate;
#                120 = the two single-task adapters' 60 steps each)
# dial: --blend-base-scale lambda --blend-kl on the Sudoku adapter DIAL_ADAPTER (the comparison's egspo-sa seed-1
#   run, beta 0); beta: that recipe again with --beta b (seed 1), each evaluated at lambda 1 with --blend-kl.
#
# The adapters are the comparison's seed-1 EGSPO-SA runs (run scripts/compare.sh sudoku / countdown first), so
# both single-task adapters had the same 60-step budget.
# Environment: MODEL (checkpoints/tiny-llada), SUDOKU (runs/compare/sudoku/egspo-sa-s1/adapter), COUNTDOWN
# (runs/compare/countdown/egspo-sa-s1/adapter, shipped as checkpoints/tiny-llada-adapters:countdown/egspo-sa),
# DIAL_ADAPTER (SUDOKU), WEIGHTS, LAMBDAS, BETAS, DENSITY (0.5), MULTI_STEPS (120), STEPS (60, the beta runs), JOBS (2),
# OUT (runs/blend), LIMIT (cuts the test splits: smoke runs only), DLLMRL (dllmrl). Every eval and training run resumes or is skipped when finished.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

MODEL=${MODEL:-checkpoints/tiny-llada}
SUDOKU=${SUDOKU:-runs/compare/sudoku/egspo-sa-s1/adapter}
COUNTDOWN=${COUNTDOWN:-runs/compare/countdown/egspo-sa-s1/adapter}
DIAL_ADAPTER=${DIAL_ADAPTER:-$SUDOKU}
WEIGHTS=${WEIGHTS:-"0 0.25 0.5 0.75 1"}
LAMBDAS=${LAMBDAS:-"0 0.25 0.5 1 1.5 2"}
BETAS=${BETAS:-"0.01 0.04 0.16"}
DENSITY=${DENSITY:-0.5}
MULTI_STEPS=${MULTI_STEPS:-120}
STEPS=${STEPS:-60}
JOBS=${JOBS:-2}
OUT=${OUT:-runs/blend}
DLLMRL=${DLLMRL:-dllmrl}
LR=$(python3 -c 'import json; print(json.load(open("results/compare/sudoku/lr.json"))["lr"]["egspo-sa"])' 2>/dev/null || echo 1e-3)

ev() {  # ev OUT TASK ARGS...: greedy on the whole test split, skipped when done
  local out=$1 task=$2; shift 2
  [ -f "$out/results.json" ] && return 0
  mkdir -p "$(dirname "$out")"
  "$DLLMRL" eval "$task" --model "$MODEL" --split test ${LIMIT:+--limit "$LIMIT"} --batch-size 64 --device cpu \
    --out "$out" "$@" > "$out.log" 2>&1 \
    || { echo "eval $out failed, see $out.log" >&2; return 1; }
}
both() { local out=$1; shift; ev "$out/sudoku" sudoku "$@"; ev "$out/countdown" countdown "$@"; }
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done; }
failed=0

train() {  # train DIR TASK STEPS ARGS...: the compare.sh recipe (egspo-sa, K 8, 8 prompts x 8, LoRA 16/32)
  local dir=$1 task=$2 steps=$3 resume=(); shift 3
  [ -d "$dir/adapter" ] && return 0
  [ -d "$dir/checkpoints" ] && ls "$dir/checkpoints" | grep -q '^step-' && resume=(--resume)
  "$DLLMRL" train "$task" --model "$MODEL" --device cpu --method egspo-sa --lambda 1 --k-steps 8 -G 8 \
    --batch-size 64 --grad-accum 8 --temperature 1.0 --lora-r 16 --lora-alpha 32 --warmup-steps 3 --lr "$LR" \
    --max-steps "$steps" --save-every 25 --log-every 10 --seed 1 -o "$dir" "${resume[@]}" "$@" > "$dir.log" 2>&1 \
    || { echo "training $dir failed, see $dir.log" >&2; return 1; }
}

case "${1:-}" in
  front)
    mkdir -p "$OUT/front" "$OUT/merge"
    both "$OUT/front/base"
    for w in $WEIGHTS; do
      v=$(python3 -c "print(round(1 - $w, 6))")
      named=(--adapter "sudoku=$SUDOKU" --adapter "countdown=$COUNTDOWN")
      throttle; both "$OUT/front/logit-w$w" "${named[@]}" --blend "sudoku=$w,countdown=$v" &
      throttle; both "$OUT/front/random-step-w$w" "${named[@]}" --blend "sudoku=$w,countdown=$v" --blend-mode random-step &
      for how in linear ties; do
        dir=$OUT/merge/$how-w$w
        if [ ! -f "$dir/adapter_config.json" ]; then
          if [ "$how" = linear ]; then extra=(--how cat); else extra=(--how ties --density "$DENSITY"); fi
          "$DLLMRL" merge --model "$MODEL" "${named[@]}" --weights "$w,$v" "${extra[@]}" -o "$dir" > "$dir.log" 2>&1
        fi
        throttle; both "$OUT/front/$how-w$w" --adapter "$dir" &
      done
    done
    mkdir -p "$OUT/train"
    throttle
    ( train "$OUT/train/multi" "sudoku+countdown" "$MULTI_STEPS" --reward-weight sudoku.correct=1 \
      && both "$OUT/front/multi-task" --adapter "$OUT/train/multi/adapter" ) &
    ;;
  dial)
    for lam in $LAMBDAS; do
      throttle; ev "$OUT/dial/sudoku-lam$lam" sudoku --adapter "$DIAL_ADAPTER" --blend-base-scale "$lam" --blend-kl &
    done
    ;;
  beta)
    mkdir -p "$OUT/train"
    for b in $BETAS; do
      throttle
      ( train "$OUT/train/beta$b" sudoku "$STEPS" --beta "$b" --reward-weight correct=1 \
        && ev "$OUT/dial/sudoku-beta$b" sudoku --adapter "$OUT/train/beta$b/adapter" --blend-base-scale 1 --blend-kl ) &
    done
    ;;
  *) echo "usage: bash scripts/blend_experiments.sh front|dial|beta" >&2; exit 2 ;;
esac
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
exit $failed
