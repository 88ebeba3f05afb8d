#!/usr/bin/env bash
# The paper's analyses (Figs. 3-6) on MiniLM-L6 and ../shared/data/glue, on a 2-core budget.
#
# Reuses the runs of benchmarks/glue_reproduction.py (same budget: at most 10,000
# training examples, i.e. full training sets but SST-2's, 3 epochs, batch 32, seed 0;
# adapters at lr 1e-3) and adds the extra sizes / k that a per-task trade-off curve
# needs. The last section redraws Figs. 4 and 5 over three seeds for RTE and MRPC from
# protocol sweeps under runs/glue_paper/ (skipped where they are missing). Every step
# resumes: finished runs are skipped. Figures and JSON go to docs/figures/, replacing this
# script's earlier ones there (--overwrite);
# docs/analyses.md discusses them.
#
#   bash benchmarks/paper_analyses.sh [GLUE_DIR] [all|seeds]    (seeds: only the last section)
set -euo pipefail
GLUE="${1:-../shared/data/glue}"
ONLY="${2:-all}"
case "$ONLY" in all|seeds) ;; *) echo "error: the second argument is all or seeds, not $ONLY" >&2; exit 2;; esac
REPRO=runs/glue_reproduction
EXTRA=runs/analyses
FIGS=docs/figures
AK="${AK:-.venv/bin/adapter-keras}"
BUDGET=(--encoder minilm-l6 --max-train-examples 10000 --epochs 3 --batch-size 32 --max-seq-length 128
        --learning-rate 1e-3)
mkdir -p "$EXTRA" "$FIGS"

if [ "$ONLY" = all ]; then

# Fig. 5: ablation of trained size-64 adapters, every layer span.
for task in sst2 mrpc rte cola; do
  if [ -e "$EXTRA/ablation-$task/ablation.json" ]; then
    echo "ablation $task: done earlier ($EXTRA/ablation-$task), skipped"
  elif [ -d "$REPRO/$task-adapter-64/artifact" ]; then
    "$AK" analyze ablation --overwrite --artifact "$REPRO/$task-adapter-64/artifact" --encoder minilm-l6 \
      --task "$task" --data-dir "$GLUE" --out "$EXTRA/ablation-$task"
  else
    echo "skip ablation $task: run benchmarks/glue_reproduction.py first"
    continue
  fi
  mkdir -p "$FIGS/ablation-$task"
  cp "$EXTRA/ablation-$task/ablation.json" "$EXTRA/ablation-$task/ablation.png" "$FIGS/ablation-$task/"
done

# Fig. 6: initialisation scale, adapters of size 64 on SST-2; three seeds on 2,000 training
# examples each, for error bars at the same cost as one seed on 10,000 (finished runs are reused).
"$AK" analyze init-scale --overwrite --task sst2 --data-dir "$GLUE" "${BUDGET[@]}" --max-train-examples 2000 \
  --adapter-size 64 --stds 1e-6 1e-4 1e-2 1e-1 1 --seeds 0 1 2 --out "$EXTRA/init-scale-sst2"
cp "$EXTRA/init-scale-sst2/init_scale.json" "$EXTRA/init-scale-sst2/init_scale.png" "$FIGS/"

# Fig. 4: one task, many sizes: the reproduction's adapter sizes 8/64/256, LayerNorm-only
# and full fine-tuning, plus adapters of size 2/16/32 and top-k fine-tuning for k = 1..4.
# Top-k trains whole layers, so it gets full fine-tuning's learning rate (1e-4): at the
# adapters' 1e-3 it falls apart as k grows (SST-2 top-4: 0.68 accuracy, measured).
for task in sst2 mrpc; do
  for size in 2 16 32; do
    "$AK" train --task "$task" --data-dir "$GLUE" "${BUDGET[@]}" --method adapter --adapter-size "$size" \
      --out "$EXTRA/$task-adapter-$size"
  done
  for k in 1 2 3 4; do
    "$AK" train --task "$task" --data-dir "$GLUE" "${BUDGET[@]}" --method top-k --top-k "$k" \
      --learning-rate 1e-4 --out "$EXTRA/$task-top-$k-lr1e-4"
  done
  runs=("$EXTRA/$task"-adapter-* "$EXTRA/$task"-top-*-lr1e-4 "$REPRO/$task"-adapter-* "$REPRO/$task-full"
        "$REPRO/$task-layer-norm")
  "$AK" analyze tradeoff --overwrite --from-runs "${runs[@]}" --out "$FIGS/tradeoff-$task"
done

# Fig. 3: all five tasks, scores minus full fine-tuning, 20/50/80th percentiles.
"$AK" analyze tradeoff --overwrite --from-runs "$REPRO"/* --out "$FIGS/tradeoff-glue"
fi

# Figs. 4 and 5 over seeds, RTE and MRPC: from the protocol sweeps under runs/glue_paper/<task>/<method>
# (learning rates x seeds 0 1 2; adapters of size 8 and 64, each trial keeping its artifact/). Every
# point takes the learning rate with the best mean dev score over seeds and shows that mean +- s.e.m.
PAPER=runs/glue_paper
for task in rte mrpc; do
  SWEEP="$PAPER/$task/adapter"
  if [ ! -d "$SWEEP/trials" ]; then
    echo "skip multi-seed analyses of $task: no adapter sweep in $SWEEP"
    continue
  fi
  # Fig. 5: the size-64 adapters of every seed at the learning rate with the best mean.
  if [ -e "$EXTRA/ablation-seeds-$task/ablation.json" ]; then
    echo "ablation over seeds $task: done earlier ($EXTRA/ablation-seeds-$task), skipped"
  else
    "$AK" analyze ablation --overwrite --artifacts-from-sweep "$SWEEP" --adapter-size 64 --encoder minilm-l6 \
      --task "$task" --data-dir "$GLUE" --out "$EXTRA/ablation-seeds-$task"
  fi
  mkdir -p "$FIGS/ablation-seeds-$task"
  cp "$EXTRA/ablation-seeds-$task/ablation.json" "$EXTRA/ablation-seeds-$task/ablation.png" \
    "$FIGS/ablation-seeds-$task/"
  # Fig. 4: every finished trial of the task's sweeps; a missing method is left out of the figure.
  trials=()
  for method in adapter full layer-norm top-k; do
    found=0
    for metrics in "$PAPER/$task/$method"/trials/*/metrics.json; do
      [ -e "$metrics" ] || continue
      trials+=("$(dirname "$metrics")")
      found=1
    done
    [ "$found" = 1 ] || echo "tradeoff over seeds $task: no finished $method trials in $PAPER/$task/$method, left out"
  done
  "$AK" analyze tradeoff --overwrite --from-runs "${trials[@]}" --out "$FIGS/tradeoff-seeds-$task"
done
