#!/usr/bin/env bash
# Rebuild checkpoints/tiny-llada from scratch: the tiny-LLaDA builder, then `dllmrl sft` on Sudoku and
# Countdown mixed 1:11 (`dllmrl sft 'sudoku+countdown*11'`). One shared base model for both tasks.
#
#   scripts/make_tiny_llada.sh                       # -> runs/sft-tiny-llada, then checkpoints/tiny-llada
#   STEPS=1500 DEST=runs/tiny-llada-1500 scripts/make_tiny_llada.sh   # another point of the curve
#
# Overrides: STEPS (SFT steps; 1750 for the shipped model, see its card), BASE / RUN (the builder's and the
# SFT run's directories), DEST (where the model goes).
#
# One torch thread, as the model card's numbers were measured. The SFT run is deterministic (seeded data
# order and masks, constant learning rate after warm-up; the quick evaluation does not touch the weights),
# so `--max-steps S` reproduces the step-S checkpoint of a longer run: the shipped model is the step-1750
# checkpoint of a run that was stopped at step 2249 (results/tiny-llada/round2).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Compact prompts: Sudoku '3102200002100320' and Countdown '44 19 35 -> 98' are 22 and at most 21 tokens
# with the chat template; gen_len 16 holds Sudoku's 16-digit grid exactly and Countdown's <= 10-character
# expression plus <|endoftext|> padding, and 16 steps unmask one token a step (gen_len 32 made the Countdown
# loss mostly padding and unmasked two tokens a step: 0% Countdown after 1000 steps), so 64 positions are enough.
BUILD=(--hidden 128 --layers 4 --heads 4 --intermediate 384 --max-len 64)
DEFAULTS='{"prompt_style": "compact", "gen_len": 16, "steps": 16, "block_len": 16, "temperature": 0.0}'
# Sudoku's 'train' (generated, never a test or validation puzzle) with Countdown's 'generated' (never a test,
# train-file or validation puzzle), Countdown drawn 11 times as often: Sudoku is learnt far faster. The quick
# evaluation reads the mixture's validation split (mostly Countdown).
TASK='sudoku+countdown*11'
SFT=(--split train+generated --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS:-1750}"
     --eval-every 250 --eval-limit 128 --seed 0)

base=${BASE:-runs/tiny-llada-base}
run=${RUN:-runs/sft-tiny-llada}
dest=${DEST:-checkpoints/tiny-llada}
rm -rf "$base" "$run"
python3 -m dllmrl.models.tiny_llada "$base" "${BUILD[@]}"
# Sampler defaults the model carries (eval, train and sample read them; a flag on the command line wins).
echo "$DEFAULTS" > "$base/dllmrl.json"
dllmrl sft "$TASK" --model "$base" --output "$run" "${SFT[@]}" --save-every 250 --log-every 50 --device cpu
rm -rf "$dest.new"
cp -r "$run/model" "$dest.new"
cp "checkpoints/tiny-llada/README.md" "$dest.new/" 2>/dev/null || true
rm -rf "$dest"
mv "$dest.new" "$dest"
du -sh "$dest"
