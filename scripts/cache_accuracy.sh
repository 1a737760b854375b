#!/usr/bin/env bash
# Held-out accuracy and eval speed of every --cache x --decode combination on the shipped tiny LLaDA
# (Sudoku, all 500 test puzzles, greedy), at the model's own settings (one block of 16) and with
# blocks of 4 (four blocks: there the caches skip work). Writes results/speed/cache_accuracy.md.
#
#   bash scripts/cache_accuracy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL=${MODEL:-checkpoints/tiny-llada}
OUT=${OUT:-runs/cache-accuracy}
for block in 16 4; do
  for cache in none prefix dual; do
    for decode in fixed threshold; do
      dllmrl eval sudoku --model "$MODEL" --split test --batch-size 100 --block-len "$block" \
        --cache "$cache" --decode "$decode" --threshold 0.9 --device cpu \
        --out "$OUT/block$block-$cache-$decode" > /dev/null 2>&1
    done
  done
done
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = ["| block_len | cache | decode | solved | cell acc | forwards per puzzle | eval s (500 puzzles) | speed vs none/fixed |",
        "|---|---|---|---|---|---|---|---|"]
base = {}
for block in (16, 4):
    for cache in ("none", "prefix", "dual"):
        for decode in ("fixed", "threshold"):
            d = out / f"block{block}-{cache}-{decode}"
            res = json.loads((d / "results.json").read_text())
            L = res["lengths"][0]
            recs = [json.loads(l) for l in (d / "records.jsonl").read_text().splitlines() if l.strip()]
            nfe = sum(r["nfe"] for r in recs) / len(recs)
            secs = sum(r["gen_seconds"] for r in recs)
            if cache == "none" and decode == "fixed":
                base[block] = secs
            rows.append(f"| {block} | {cache} | {decode} | {L['accuracy']:.3f} | {L['metrics'].get('cell_acc', float('nan')):.4f} | "
                        f"{nfe:.1f} | {secs:.1f} | {base[block] / secs:.2f}x |")
text = "\n".join(rows) + "\n"
pathlib.Path("results/speed/cache_accuracy.md").write_text(text)
print(text)
PY
