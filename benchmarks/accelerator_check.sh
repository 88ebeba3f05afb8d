#!/usr/bin/env bash
# Accelerator check: the demo task (Rotten Tomatoes, size-64 adapters on MiniLM-L6) trained on one GPU
# with --strategy mirrored, XLA, bfloat16 and static shapes, then benchmarks/throughput.py with XLA and
# bfloat16 there. Writes OUT/accelerator_check.md (a table) and the raw JSON beside it.
#
#   bash benchmarks/accelerator_check.sh [OUT]      # default OUT: runs/accelerator_check
#
# Needs the project installed (`make install`: .venv with the offline assets) and a visible GPU; it
# refuses to run on a machine without one. Planned to finish in under 8 minutes on one recent GPU
# (1 epoch, then throughput.py --quick); each step prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/accelerator_check}"
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" PYTHONUNBUFFERED=1
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "error: $OUT exists and is not empty; choose another OUT" >&2
  exit 2
fi
mkdir -p "$OUT"

"$PY" - <<'EOF'
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if not gpus:
  sys.exit("error: no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)")
print(f"[accelerator-check] {len(gpus)} GPU(s): {[tf.config.experimental.get_device_details(g).get('device_name') for g in gpus]}")
EOF

# The demo's Rotten Tomatoes split (adapter_keras.demo: seeded 90/10, then 5% of train as dev) as CSV files.
"$PY" - "$OUT" <<'EOF'
import csv, os, sys
from adapter_keras.demo import SPLIT_SEED
from adapter_keras.tasks.data import load_rotten_tomatoes, train_test_split
out = sys.argv[1]
examples = load_rotten_tomatoes()
train, test = train_test_split(examples, test_fraction=0.1, seed=SPLIT_SEED)
train, dev = train_test_split(train, test_fraction=0.05, seed=SPLIT_SEED)
for name, part in (("train", train), ("dev", dev), ("test", test)):
  with open(os.path.join(out, f"rt_{name}.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(zip(part.text, [examples.label_names[i] for i in part.labels]))
print(f"[accelerator-check] rotten tomatoes: {len(train)} train, {len(dev)} dev, {len(test)} test")
EOF

start=$(date +%s)
"$PY" -m adapter_keras train --train "$OUT/rt_train.csv" --dev "$OUT/rt_dev.csv" --text-column text \
    --label-column label --task rotten_tomatoes --encoder minilm-l6 --method adapter --adapter-size 64 \
    --learning-rate 1e-3 --epochs 1 --batch-size 32 --strategy mirrored --jit-compile \
    --mixed-precision bfloat16 --static-shapes --steps-per-execution 8 --out "$OUT/train" --json \
    | tee "$OUT/train.log"
train_seconds=$(( $(date +%s) - start ))
tail -n 1 "$OUT/train.log" > "$OUT/train.json"

start=$(date +%s)
"$PY" benchmarks/throughput.py --quick --jit-compile --mixed-precision bfloat16 --json | tee "$OUT/throughput.log"
throughput_seconds=$(( $(date +%s) - start ))
tail -n 1 "$OUT/throughput.log" > "$OUT/throughput.json"

"$PY" - "$OUT" "$train_seconds" "$throughput_seconds" <<'EOF'
import json, os, sys
out, train_seconds, throughput_seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train = json.load(open(os.path.join(out, "train.json")))
tp = json.load(open(os.path.join(out, "throughput.json")))
rows = [("demo task dev accuracy (1 epoch, mirrored + XLA + bf16 + static shapes)", f"{train['metrics']['accuracy']:.4f}"),
        ("demo task wall time, load + 1 epoch + evaluation", f"{train_seconds} s"),
        ("trained parameters", f"{train['trained_params']:,} ({100 * train['trained_fraction']:.2f}% of base)")]
rows += [(f"training examples/s, {name}", f"{value:.1f}") for name, value in tp["train_examples_per_s"].items()]
for key in ("adapter_over_full_train", "prefix_cache_over_full_train", "useful_flops_fraction_full",
            "infer_overhead_bs1", "infer_overhead_bs32", "peak_memory_adapter_over_full"):
  if key in tp:
    rows.append((key, f"{tp[key]:.3f}"))
rows.append(("throughput.py --quick wall time", f"{throughput_seconds} s"))
table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
with open(os.path.join(out, "accelerator_check.md"), "w", encoding="utf-8") as f:
  f.write(table)
print(table)
EOF
