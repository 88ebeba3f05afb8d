#!/usr/bin/env bash
# The no-BERT AutoML baseline on the GLUE classification tasks of ../shared/data/glue,
# as the baseline row of docs/results/glue_minilm.md (STS-B is regression: not searched).
#
# Budget for a 2-core CPU: 3 random-search trials per task, 2,000 training examples,
# one offline embedding module (all-MiniLM-L6-v2's WordPiece table, fine-tunable).
# Every step resumes: a finished search only reports.
#
#   bash benchmarks/automl_glue.sh [GLUE_DIR]
set -euo pipefail
GLUE="${1:-../shared/data/glue}"
OUT=runs/automl
MODULE=runs/modules/minilm_wordpiece
BIN="${BIN:-.venv/bin}"
if [ ! -e "$MODULE/saved_model.pb" ]; then
  "$BIN/automl-baseline" make-module --from-encoder minilm-l6 --kind token-table --out "$MODULE"
fi
for task in cola sst2 mrpc rte; do
  "$BIN/automl-baseline" search --task "$task" --data-dir "$GLUE" --embeddings "$MODULE" \
    --max-trials 3 --max-train-examples 2000 --seed 0 --out "$OUT/$task"
done
# Re-writes the table (every adapter/fine-tuning run is already done) with the baseline row.
"$BIN/python" benchmarks/glue_reproduction.py --data-dir "$GLUE" --max-train-examples 10000 --epochs 3 \
  --automl-dir "$OUT"
