#!/usr/bin/env bash
# Rebuild the shipped tiny models from scratch: the tiny-model builder, then `dllmrl sft`.
#
#   scripts/make_tiny_checkpoints.sh sudoku        # -> runs/sft-tiny-sudoku, then checkpoints/tiny-sudoku
#   scripts/make_tiny_checkpoints.sh countdown     # -> runs/sft-tiny-countdown, then checkpoints/tiny-countdown
#   STEPS=1750 DEST=runs/tiny-sudoku-1750 scripts/make_tiny_checkpoints.sh sudoku   # another point of the curve
#
# Overrides: STEPS (SFT steps), BASE / RUN (the builder's and the SFT run's directories), DEST (where the model goes).
#
# One torch thread (the numbers in the model cards were measured that way, on 2 shared CPU cores).
# The SFT runs are deterministic: the data order and the masks come from seeded generators, and the
# learning rate is constant after warm-up, so `--max-steps S` reproduces the step-S checkpoint of a
# longer run. Each model is trained only part of the way on purpose: its held-out accuracy leaves
# room for RL (see the model cards).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

which=${1:?usage: scripts/make_tiny_checkpoints.sh sudoku|countdown}
case "$which" in
  sudoku)
    # compact prompt: <bos><|user|>\n + 16-character puzzle + <|eot|><|assistant|>\n = 22 tokens; + gen_len 32 = 54
    BUILD=(--hidden 128 --layers 4 --heads 4 --intermediate 256 --max-len 64)
    DEFAULTS='{"prompt_style": "compact", "gen_len": 32, "steps": 16, "block_len": 32, "temperature": 0.0}'
    SFT=(--split train --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS:-1500}")
    ;;
  countdown)
    # compact prompt "30 100 93 -> 23" (at most 15 characters) = 21 tokens; + gen_len 16 (solver expressions have <= 10)
    BUILD=(--hidden 128 --layers 4 --heads 4 --intermediate 256 --max-len 64)
    DEFAULTS='{"prompt_style": "compact", "gen_len": 16, "steps": 16, "block_len": 16, "temperature": 0.0}'
    # The quick held-out evaluation does not change the weights (its sampler has its own generator).
    SFT=(--split generated --lr 1e-3 --batch-size 64 --warmup-steps 100 --max-steps "${STEPS:-2500}"
         --eval-every 250 --eval-limit 128)
    ;;
  *) echo "unknown model '$which': sudoku or countdown" >&2; exit 2 ;;
esac

base=${BASE:-runs/tiny-$which-base}
run=${RUN:-runs/sft-tiny-$which}
dest=${DEST:-checkpoints/tiny-$which}
rm -rf "$base" "$run"
python3 -m dllmrl.models.tiny "$base" "${BUILD[@]}"
# Sampler defaults the model carries (eval, train and sample read them; a flag on the command line wins).
echo "$DEFAULTS" > "$base/dllmrl.json"
dllmrl sft "$which" --model "$base" --output "$run" "${SFT[@]}" --save-every 250 --log-every 25 --device cpu
rm -rf "$dest.new"
cp -r "$run/model" "$dest.new"
cp "checkpoints/tiny-$which/README.md" "$dest.new/" 2>/dev/null || true
rm -rf "$dest"
mv "$dest.new" "$dest"
du -sh "$dest"
