#!/usr/bin/env bash
# Rebuild checkpoints/tiny-llada from scratch: the tiny-LLaDA builder, then `dllmrl sft` on Sudoku and
# Countdown interleaved 1:1 (`dllmrl sft sudoku+countdown`). One shared base model for both tasks.
#
#   scripts/make_tiny_llada.sh                       # -> runs/sft-tiny-llada, then checkpoints/tiny-llada
#   STEPS=1000 DEST=runs/tiny-llada-1000 scripts/make_tiny_llada.sh   # another point of the curve
#
# Overrides: STEPS (SFT steps; 500 for the shipped model, see its card), BASE / RUN (the builder's and the
# SFT run's directories), DEST (where the model goes).
#
# One torch thread, as the model card's numbers were measured. The SFT run is deterministic (seeded data
# order and masks, constant learning rate after warm-up; the quick evaluation does not touch the weights),
# so `--max-steps S` reproduces the step-S checkpoint of a longer run: the shipped model is the step-500
# checkpoint of a run that was stopped after step 1150.
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
SFT=(--split train+generated --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS:-500}"
     --eval-every 500 --eval-limit 128)

base=${BASE:-runs/tiny-llada-base}
run=${RUN:-runs/sft-tiny-llada}
dest=${DEST:-checkpoints/tiny-llada}
rm -rf "$base" "$run"
python3 -m dllmrl.models.tiny_llada "$base" "${BUILD[@]}"
# Sampler defaults the model carries (eval, train and sample read them; a flag on the command line wins).
echo "$DEFAULTS" > "$base/dllmrl.json"
dllmrl sft sudoku+countdown --model "$base" --output "$run" "${SFT[@]}" --save-every 500 --log-every 50 --device cpu
rm -rf "$dest.new"
cp -r "$run/model" "$dest.new"
cp "checkpoints/tiny-llada/README.md" "$dest.new/" 2>/dev/null || true
rm -rf "$dest"
mv "$dest.new" "$dest"
du -sh "$dest"
