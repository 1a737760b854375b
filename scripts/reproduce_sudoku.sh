#!/usr/bin/env bash
# The CPU-scale reproduction of the paper's Sudoku comparison (issue 5), from checkpoints/tiny-sudoku.
# Kept as the recipe of that round's record, results/sudoku/; new rounds use scripts/compare.sh (every method,
# a learning rate per method, compute accounting, paired intervals): its egspo-sa, egspo, diffu-grpo and
# egspo-sa-random runs at MODEL=checkpoints/tiny-sudoku SEEDS="1 2" without an lr.json (DEFAULT_LR 1e-3) train
# exactly as here.
#
#   bash scripts/reproduce_sudoku.sh                    # every method, seeds 1 and 2, then the table and plot
#   SEEDS="1" bash scripts/reproduce_sudoku.sh          # one seed
#   bash scripts/reproduce_sudoku.sh egspo-sa egspo     # only these methods
#   SEEDS=1 bash scripts/reproduce_sudoku.sh egspo-sa-kl   # an extra run: EGSPO-SA with beta 0.04
#   bash scripts/reproduce_sudoku.sh diffu-grpo-lr1e-4      # extra runs: diffu-GRPO at lr 1e-4
#
# Same budget for every method: the same optimizer steps, prompts per step, generations per prompt
# (G), micro-steps per rollout (K = 8 selected steps for the EGSPO family, μ = 8 inner iterations
# for diffu-GRPO), gen_len, sampler and seeds. Runs go to runs/repro/<method>-s<seed>, their test
# evaluations to runs/repro/eval/<method>-s<seed> (and runs/repro/eval/base for the shipped model).
# A finished run (its eval results.json exists) is skipped; an interrupted one resumes.
# JOBS runs at a time (default 2), one torch thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

MODEL=checkpoints/tiny-sudoku
SEEDS=${SEEDS:-"1 2"}
JOBS=${JOBS:-2}
STEPS=${STEPS:-150}
OUT=runs/repro
METHODS=("$@")
[ ${#METHODS[@]} -gt 0 ] || METHODS=(egspo-sa egspo diffu-grpo egspo-sa-random)

# Shared by every method (the egspo-sa run is exactly scripts/quickstart.sh's training):
#   8 prompts x G 8 = 64 sequences per rollout at temperature 1.0; one optimizer step per rollout
#   (8 micro-steps, grad-accum 8); LoRA r 16 / alpha 32 on the tiny model, lr 1e-3 (the paper's
#   3e-5 and r 128 are for 8B models), no KL (beta 0). Reward: the reference's blank-cell accuracy
#   plus 1 for a solved puzzle (--reward-weight correct=1), because the blank-cell reward alone
#   pays for overwriting given digits and the runs learn to (results/sudoku/tuning.md).
#   Sampler: the model's dllmrl.json (compact prompt, gen_len 32, 16 steps, block 32).
COMMON=(--model "$MODEL" --device cpu -G 8 --batch-size 64 --grad-accum 8 --temperature 1.0
        --lora-r 16 --lora-alpha 32 --lr 1e-3 --warmup-steps 3 --beta 0 --reward-weight correct=1
        --max-steps "$STEPS" --save-every 20 --log-every 10)

method_args() {
  case "$1" in
    egspo-sa)        echo "--method egspo-sa --lambda 1 --k-steps 8" ;;
    egspo-sa-random) echo "--method egspo-sa --lambda 1 --k-steps 8 --select random" ;;
    egspo)           echo "--method egspo --k-steps 8" ;;
    diffu-grpo)      echo "--method diffu-grpo --mu 8" ;;
    # not in the default set: diffu-GRPO at its own, lower learning rate (a later --lr wins over COMMON's)
    diffu-grpo-lr1e-4) echo "--method diffu-grpo --mu 8 --lr 1e-4" ;;
    # not in the default set: EGSPO-SA with the paper's KL term (a later --beta wins over COMMON's)
    egspo-sa-kl)     echo "--method egspo-sa --lambda 1 --k-steps 8 --beta 0.04" ;;
    *) echo "unknown method '$1'" >&2; return 2 ;;
  esac
}

evaluate() {  # evaluate NAME [ADAPTER]: the whole test split (500 puzzles) at the model's settings
  local name=$1 adapter=${2:-}
  [ -f "$OUT/eval/$name/results.json" ] && return 0
  dllmrl eval sudoku --model "$MODEL" ${adapter:+--adapter "$adapter"} --split test --batch-size 64 \
    --device cpu --out "$OUT/eval/$name" > "$OUT/eval/$name.log" 2>&1
}

run_one() {  # run_one METHOD SEED
  local method=$1 seed=$2 name="$1-s$2" resume=()
  [ -f "$OUT/eval/$name/results.json" ] && { echo "$name: done already"; return 0; }
  [ -d "$OUT/$name/checkpoints" ] && resume=(--resume)
  echo "$(date -u +%H:%M:%S) $name: training"
  # shellcheck disable=SC2046
  dllmrl train sudoku "${COMMON[@]}" $(method_args "$method") --seed "$seed" -o "$OUT/$name" "${resume[@]}" \
    > "$OUT/$name.log" 2>&1
  echo "$(date -u +%H:%M:%S) $name: evaluating"
  evaluate "$name" "$OUT/$name/adapter"
  echo "$(date -u +%H:%M:%S) $name: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['lengths'][0]; print(f\"solved {r['accuracy']:.3f}, cell acc {r['metrics']['cell_acc']:.3f}\")" "$OUT/eval/$name/results.json")"
}

mkdir -p "$OUT/eval"
evaluate base
for seed in $SEEDS; do
  for method in "${METHODS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    run_one "$method" "$seed" &
  done
done
wait

python3 scripts/summarize_repro.py --runs "$OUT" --out results/sudoku
dllmrl plot results/sudoku/runs/*-s* --metric reward --smooth 10 --out results/sudoku/reward.png \
  --title "tiny-sudoku: rollout reward (blank-cell accuracy + solved)" || true
