#!/usr/bin/env bash
# Rebuild checkpoints/tiny-llada from scratch: the tiny-LLaDA builder, then two `dllmrl sft` stages
# (one shared base model for both tasks' RL runs):
#   1. Sudoku and Countdown interleaved (`dllmrl sft sudoku+countdown`) for STEPS1 steps;
#   2. Countdown alone for STEPS2 steps, from stage 1's model.
# Why two stages: with the tasks mixed 1:1 the tiny LLaDA solves 83% of Sudoku's validation puzzles
# after 1000 steps while it still solves no Countdown puzzle, so no single step of one mixed run leaves
# room for RL on both; stage 2 teaches Countdown while Sudoku's accuracy comes down (see the model card).
#
#   scripts/make_tiny_llada.sh                       # -> runs/sft-tiny-llada{,-cd}, then checkpoints/tiny-llada
#   STEPS2=500 DEST=runs/tiny-llada-cd500 scripts/make_tiny_llada.sh   # another point of stage 2
#
# Overrides: STEPS1, STEPS2 (the shipped model's are in its model card), BASE / RUN / RUN2 (the builder's and
# the two SFT runs' directories), DEST (where the model goes).
#
# One torch thread, as the model card's numbers were measured. The SFT run is deterministic (seeded data
# order and masks, constant learning rate after warm-up), so `--max-steps S` reproduces the step-S
# checkpoint of a longer run.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Compact prompts: Sudoku '3102200002100320' and Countdown '44 19 35 -> 98' are 22 and at most 21 tokens
# with the chat template; gen_len 32 holds Sudoku's 16-digit grid and Countdown's <= 10-character expression
# (the rest is <|endoftext|> padding), so 64 positions are enough.
BUILD=(--hidden 128 --layers 4 --heads 4 --intermediate 384 --max-len 64)
DEFAULTS='{"prompt_style": "compact", "gen_len": 32, "steps": 16, "block_len": 32, "temperature": 0.0}'
# Sudoku's 'train' (generated, never a test or validation puzzle) interleaved with Countdown's 'generated'
# (never a test, train-file or validation puzzle); the quick evaluation reads the mixture's validation split.
SFT1=(--split train+generated --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS1:-1000}"
      --eval-every 500 --eval-limit 128)
# Countdown's 'generated' split (never a test, train-file or validation puzzle); a fresh optimiser and warm-up.
SFT2=(--split generated --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS2:-STEPS2_SHIPPED}")

base=${BASE:-runs/tiny-llada-base}
run=${RUN:-runs/sft-tiny-llada}
run2=${RUN2:-runs/sft-tiny-llada-cd}
dest=${DEST:-checkpoints/tiny-llada}
rm -rf "$base" "$run" "$run2"
python3 -m dllmrl.models.tiny_llada "$base" "${BUILD[@]}"
# Sampler defaults the model carries (eval, train and sample read them; a flag on the command line wins).
echo "$DEFAULTS" > "$base/dllmrl.json"
dllmrl sft sudoku+countdown --model "$base" --output "$run" "${SFT1[@]}" --save-every 500 --log-every 50 --device cpu
dllmrl sft countdown --model "$run/model" --output "$run2" "${SFT2[@]}" --save-every 250 --log-every 50 --device cpu
rm -rf "$dest.new"
cp -r "$run2/model" "$dest.new"
cp "checkpoints/tiny-llada/README.md" "$dest.new/" 2>/dev/null || true
rm -rf "$dest"
mv "$dest.new" "$dest"
du -sh "$dest"
