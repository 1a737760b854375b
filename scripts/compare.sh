#!/usr/bin/env bash
# The paper's comparison on equal terms: every method from one base model on one task, the same budget.
#
#   bash scripts/compare.sh TASK [METHOD...]            # TASK: sudoku | countdown; default: every method below
#   GRID=1 bash scripts/compare.sh TASK [METHOD...]     # the learning-rate grid on the validation split -> lr.json
#   OUT=runs/smoke STEPS=2 SEEDS=1 LIMIT=16 bash scripts/compare.sh sudoku egspo-sa wd1   # smoke
#
# Methods (labels): diffu-grpo wd1 spg d2-stepmerge egspo egspo-sa egspo-sa-random (--select random)
# egspo-sa-mass (--select entropy-mass --entropy-mass 0.7).
#
# The same for every method: optimizer steps (STEPS), prompts per step (PROMPTS) x generations (G),
# MICRO micro-steps per rollout with grad-accum MICRO (one optimizer step per rollout: K = MICRO selected
# steps for the EGSPO family, μ = MICRO for diffu-GRPO, wd1 and SPG, N = MICRO step groups for d2), the
# sampler of the model's dllmrl.json (gen_len, denoising steps, block) at TEMPERATURE, LoRA r 16 / α 32,
# β 0, the seeds. Each method trains at its own learning rate from LR_FILE (results/compare/TASK/lr.json,
# written by GRID=1; a variant without its own entry takes its base method's, a method without any
# DEFAULT_LR). Runs go to OUT/<method>-s<seed> (OUT = runs/compare/TASK); each final adapter is evaluated
# greedily at the model's settings on the whole test split (Sudoku 500, Countdown 256; LIMIT cuts it, into
# OUT/eval-limitN instead of OUT/eval), the base model once. Finished work is skipped (a trained run has
# OUT/<name>/adapter, an evaluated one results.json); an interrupted run resumes from its last checkpoint.
# EVAL_CHECKPOINTS=1 also evaluates every saved checkpoint (every SAVE_EVERY steps) on the first
# CKPT_LIMIT test examples, for the accuracy-against-compute plot. Then scripts/summarize_compare.py.
#
# GRID=1: one run per method and learning rate in GRID_LRS (seed GRID_SEED, GRID_STEPS steps) into
# OUT/grid/<method>-lr<lr>, each evaluated on the first GRID_LIMIT validation examples; the best
# learning rate per method (validation accuracy, ties to the lower rate) goes to LR_FILE with the grid.
#
# Environment: MODEL (checkpoints/tiny-llada), SEEDS (sudoku "1 2 3", countdown "1 2"), JOBS (2 at a time,
# one torch thread each), STEPS (150), PROMPTS (8), G (8), MICRO (8), TEMPERATURE (1.0), SAVE_EVERY (25),
# LIMIT, EVAL_BATCH (64), DEVICE (cpu), OUT, RESULTS (results/compare/TASK), LR_FILE, DEFAULT_LR (1e-3),
# GRID_LRS ("3e-4 1e-3 3e-3"), GRID_STEPS (40), GRID_SEED (1), GRID_LIMIT (200), EVAL_CHECKPOINTS (0),
# CKPT_LIMIT (100), DLLMRL (dllmrl), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

usage="usage: [MODEL=...] [SEEDS=...] [GRID=1] bash scripts/compare.sh sudoku|countdown [METHOD...]"
TASK=${1:-}
[ -n "$TASK" ] || { echo "$usage" >&2; exit 2; }
shift
case "$TASK" in
  # Sudoku: the reference's blank-cell reward plus 1 for a solved grid (cell accuracy alone pays for
  # overwriting given digits; results/sudoku/tuning.md).
  sudoku)    DEFAULT_SEEDS="1 2 3"; TASK_ARGS=(--reward-weight correct=1) ;;
  countdown) DEFAULT_SEEDS="1 2";   TASK_ARGS=() ;;
  *) echo "unknown task '$TASK' (sudoku or countdown); $usage" >&2; exit 2 ;;
esac

MODEL=${MODEL:-checkpoints/tiny-llada}
SEEDS=${SEEDS:-$DEFAULT_SEEDS}
JOBS=${JOBS:-2}
STEPS=${STEPS:-150}
PROMPTS=${PROMPTS:-8}
G=${G:-8}
MICRO=${MICRO:-8}
TEMPERATURE=${TEMPERATURE:-1.0}
SAVE_EVERY=${SAVE_EVERY:-25}
LIMIT=${LIMIT:-}
EVAL_BATCH=${EVAL_BATCH:-64}
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-runs/compare/$TASK}
RESULTS=${RESULTS:-results/compare/$TASK}
LR_FILE=${LR_FILE:-$RESULTS/lr.json}
DEFAULT_LR=${DEFAULT_LR:-1e-3}
GRID=${GRID:-0}
GRID_LRS=${GRID_LRS:-"3e-4 1e-3 3e-3"}
GRID_STEPS=${GRID_STEPS:-40}
GRID_SEED=${GRID_SEED:-1}
GRID_LIMIT=${GRID_LIMIT:-200}
EVAL_CHECKPOINTS=${EVAL_CHECKPOINTS:-0}
CKPT_LIMIT=${CKPT_LIMIT:-100}
DLLMRL=${DLLMRL:-dllmrl}
PYTHON=${PYTHON:-python3}

ALL=(diffu-grpo wd1 spg d2-stepmerge egspo egspo-sa egspo-sa-random egspo-sa-mass)
METHODS=("$@")
if [ ${#METHODS[@]} -eq 0 ]; then
  if [ "$GRID" = 1 ]; then METHODS=(diffu-grpo wd1 spg d2-stepmerge egspo egspo-sa); else METHODS=("${ALL[@]}"); fi
fi
[ -d "$MODEL" ] || { echo "MODEL=$MODEL is not a folder; set MODEL to the base model to compare from" >&2; exit 2; }

method_args() {  # the method's options at the shared budget
  case "$1" in
    diffu-grpo)      echo "--method diffu-grpo --mu $MICRO" ;;
    wd1)             echo "--method wd1 --mu $MICRO" ;;
    spg)             echo "--method spg --mu $MICRO" ;;
    d2-stepmerge)    echo "--method d2-stepmerge --merge-groups $MICRO --mu 1" ;;
    egspo)           echo "--method egspo --k-steps $MICRO" ;;
    egspo-sa)        echo "--method egspo-sa --lambda 1 --k-steps $MICRO" ;;
    egspo-sa-random) echo "--method egspo-sa --lambda 1 --k-steps $MICRO --select random" ;;
    egspo-sa-mass)   echo "--method egspo-sa --lambda 1 --k-steps $MICRO --select entropy-mass --entropy-mass 0.7" ;;
    *) echo "unknown method '$1' (one of: ${ALL[*]})" >&2; return 2 ;;
  esac
}
for m in "${METHODS[@]}"; do method_args "$m" > /dev/null; done  # a typo fails before any work

lr_of() {  # lr_of LABEL: its own entry in LR_FILE, else its base method's (egspo-sa-* -> egspo-sa), else DEFAULT_LR
  "$PYTHON" - "$LR_FILE" "$1" "$DEFAULT_LR" <<'EOF'
import json, sys
from pathlib import Path
path, label, default = sys.argv[1:]
table = json.loads(Path(path).read_text())["lr"] if Path(path).exists() else {}
base = "egspo-sa" if label.startswith("egspo-sa-") else label
print(table.get(label, table.get(base, default)))
EOF
}

COMMON=(--model "$MODEL" --device "$DEVICE" -G "$G" --batch-size $((PROMPTS * G)) --grad-accum "$MICRO"
        --temperature "$TEMPERATURE" --lora-r 16 --lora-alpha 32 --warmup-steps 3 --beta 0 "${TASK_ARGS[@]}"
        --log-every 10)

train_run() {  # train_run DIR LOG STEPS SEED LR METHOD: train, or resume, or skip a finished run
  local dir=$1 logf=$2 steps=$3 seed=$4 lr=$5 method=$6 resume=() had
  if [ -d "$dir/adapter" ]; then
    had=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["train"]["max_steps"])' "$dir/config.json")
    [ "$had" = "$steps" ] || echo "$dir: finished at $had steps, not the $steps asked; kept (delete it to train again)" >&2
    return 0
  fi
  if [ -d "$dir/checkpoints" ] && ls "$dir/checkpoints" | grep -q '^step-'; then
    resume=(--resume)
  elif [ -e "$dir" ]; then
    rm -rf "$dir"  # a run that died before its first checkpoint: nothing to resume, start again
  fi
  # shellcheck disable=SC2046
  "$DLLMRL" train "$TASK" "${COMMON[@]}" $(method_args "$method") --lr "$lr" --max-steps "$steps" \
    --save-every "$SAVE_EVERY" --seed "$seed" -o "$dir" "${resume[@]}" >> "$logf" 2>&1
}

evaluate() {  # evaluate OUTDIR SPLIT LIMIT [ADAPTER]: greedy at the model's dllmrl.json settings
  local out=$1 split=$2 limit=$3 adapter=${4:-}
  [ -f "$out/results.json" ] && return 0
  mkdir -p "$(dirname "$out")"
  "$DLLMRL" eval "$TASK" --model "$MODEL" ${adapter:+--adapter "$adapter"} --split "$split" \
    ${limit:+--limit "$limit"} --batch-size "$EVAL_BATCH" --device "$DEVICE" --out "$out" > "$out.log" 2>&1
}

EVAL_DIR=$OUT/eval${LIMIT:+-limit$LIMIT}
CKPT_DIR=$OUT/eval-ckpt-limit$CKPT_LIMIT
GRID_DIR=$OUT/grid

run_one() {  # run_one LABEL SEED: train, evaluate the final adapter (and the checkpoints if asked)
  local label=$1 seed=$2 name="$1-s$2" lr t0
  lr=$(lr_of "$label")
  t0=$(date +%s)
  echo "$(date -u +%H:%M:%S) $name: training at lr $lr"
  train_run "$OUT/$name" "$OUT/$name.log" "$STEPS" "$seed" "$lr" "$label" \
    || { echo "$name: training failed, see $OUT/$name.log" >&2; return 1; }
  echo "$(date -u +%H:%M:%S) $name: trained ($(( $(date +%s) - t0 )) s), evaluating"
  evaluate "$EVAL_DIR/$name" test "$LIMIT" "$OUT/$name/adapter" \
    || { echo "$name: evaluation failed, see $EVAL_DIR/$name.log" >&2; return 1; }
  if [ "$EVAL_CHECKPOINTS" = 1 ]; then
    for ck in "$OUT/$name"/checkpoints/step-*; do
      [ -d "$ck/adapter" ] && evaluate "$CKPT_DIR/$name/$(basename "$ck")" test "$CKPT_LIMIT" "$ck/adapter"
    done
  fi
  echo "$(date -u +%H:%M:%S) $name: done ($(( $(date +%s) - t0 )) s in all)"
}

grid_one() {  # grid_one LABEL LR: a short run on one seed, scored on the validation split
  local label=$1 lr=$2 name="$1-lr$2"
  echo "$(date -u +%H:%M:%S) grid $name"
  train_run "$GRID_DIR/$name" "$GRID_DIR/$name.log" "$GRID_STEPS" "$GRID_SEED" "$lr" "$label" \
    || { echo "grid $name: training failed, see $GRID_DIR/$name.log" >&2; return 1; }
  evaluate "$GRID_DIR/eval/$name" validation "$GRID_LIMIT" "$GRID_DIR/$name/adapter" \
    || { echo "grid $name: evaluation failed" >&2; return 1; }
}

throttle() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done; }

mkdir -p "$OUT" "$RESULTS"
failed=0
if [ "$GRID" = 1 ]; then
  mkdir -p "$GRID_DIR/eval"
  evaluate "$GRID_DIR/eval/base" validation "$GRID_LIMIT"
  for label in "${METHODS[@]}"; do
    for lr in $GRID_LRS; do throttle; grid_one "$label" "$lr" & done
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
  "$PYTHON" scripts/summarize_compare.py "$TASK" --runs "$OUT" --out "$RESULTS" --grid --lr-file "$LR_FILE"
else
  mkdir -p "$EVAL_DIR"
  evaluate "$EVAL_DIR/base" test "$LIMIT"
  [ "$EVAL_CHECKPOINTS" = 1 ] && evaluate "$CKPT_DIR/base" test "$CKPT_LIMIT"
  for seed in $SEEDS; do
    for label in "${METHODS[@]}"; do throttle; run_one "$label" "$seed" & done
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
  ckpt=(); [ "$EVAL_CHECKPOINTS" = 1 ] && ckpt=(--checkpoint-limit "$CKPT_LIMIT")
  made_by="STEPS=$STEPS PROMPTS=$PROMPTS G=$G MICRO=$MICRO TEMPERATURE=$TEMPERATURE SAVE_EVERY=$SAVE_EVERY"
  made_by+=" SEEDS='$SEEDS' EVAL_CHECKPOINTS=$EVAL_CHECKPOINTS LR_FILE=$LR_FILE bash scripts/compare.sh $TASK ${METHODS[*]}"
  "$PYTHON" scripts/summarize_compare.py "$TASK" --runs "$OUT" --out "$RESULTS" ${LIMIT:+--limit "$LIMIT"} "${ckpt[@]}" \
    --made-by "$made_by"
fi
exit $failed
