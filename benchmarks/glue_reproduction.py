"""Reproduce the paper's GLUE comparison (Table 1 style) on MiniLM-L6, on a budget.

Runs, per task: adapters of sizes {8, 64, 256} (the table reports the best
size on dev, and size 64 separately), full fine-tuning, top-1-layer
fine-tuning and LayerNorm-only, each with one fixed learning rate per method,
one seed, and at most --max-train-examples training examples (the paper
sweeps lr x epochs x size with 5 seeds on full training sets; this budget is
for a 2-core CPU). Every run goes through `adapter_keras.train.classification.train_task`
and is saved under --runs-dir, so an interrupted benchmark resumes.

Prints the table and writes --out-md and --out-json.

  python benchmarks/glue_reproduction.py --data-dir ../shared/data/glue \
      --max-train-examples 10000 --epochs 3

`--protocol paper` runs the paper's protocol instead (§3.2, Table 1): per task and
method a resumable `sweep` (train/sweep.py) over learning rate x adapter size x
seeds with 3 epochs, every trial's best-epoch model kept; each cell is the single
best dev run (the paper's rule) with the s.e.m. over seeds of its setting, the
best-mean table follows; the adapters' best runs predict the GLUE test files
(serving/glue_submission.py: the server's TSVs and their zip). Full fine-tuning
and top-k sweep their own learning rates (`--fine-tune-learning-rates`: at the
adapters' 3e-3 a whole Transformer diverges). It writes --out-md/--out-json
(default docs/results/glue_minilm_paper.{md,json}), beside the fixed-rate table.

  python benchmarks/glue_reproduction.py --protocol paper --tasks rte mrpc --max-train-examples 1000 \
      --methods adapter full layer-norm top-k --learning-rates 3e-4 3e-3 --top-ks 2 \
      --method-learning-rates layer-norm=3e-3 top-k=3e-4
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from adapter_keras.analysis import run_grid
from adapter_keras.analysis.report import collect_runs, markdown_table, select_run
from adapter_keras.config import AdapterConfig
from adapter_keras.io import read_json_object, write_json_atomic, write_text_atomic
from adapter_keras.tasks.sources import DataSource, load_task_data
from adapter_keras.train.run import train_task
from adapter_keras.train.config import TrainConfig

TASKS = ("cola", "sst2", "mrpc", "rte", "stsb")
# §3.2's grid for GLUE; full fine-tuning and top-k get BERT's own range (Devlin et al. 2019).
PAPER_LEARNING_RATES = (3e-5, 3e-4, 3e-3)
PAPER_FINE_TUNE_LEARNING_RATES = (3e-5, 3e-4)
PAPER_ADAPTER_SIZES = (8, 64)
PAPER_SEEDS = (0, 1, 2)
PAPER_METHODS = ("adapter", "full", "layer-norm")
PAPER_METHOD_CHOICES = ("adapter", "full", "layer-norm", "top-k")
ADAPTER_SIZES = (8, 64, 256)
LEARNING_RATES = {"adapter": 1e-3, "full": 1e-4, "top-k": 1e-3, "layer-norm": 3e-3}


def run_configs(max_train_examples, epochs, seed, encoder="minilm-l6"):
  configs = [(f"adapter-{m}", dict(method="adapter", adapter=AdapterConfig(size=m))) for m in ADAPTER_SIZES]
  configs += [("full", dict(method="full")), ("top-1", dict(method="top-k", top_k=1)),
              ("layer-norm", dict(method="layer-norm"))]
  for name, kwargs in configs:
    yield name, TrainConfig(encoder=encoder, learning_rate=LEARNING_RATES[kwargs["method"]],
                            epochs=epochs, batch_size=32, max_seq_length=128, seed=seed,
                            max_train_examples=max_train_examples, **kwargs)


def automl_baseline_row(automl_dir: str, tasks) -> dict:
  """The AutoML baseline's table row from DIR/<task>/best.json (its best model's dev metrics)."""
  from adapter_keras.tasks import get_task  # pylint: disable=import-outside-toplevel
  scores, searches = {}, {}
  for name in tasks:
    path = os.path.join(automl_dir, name, "best.json")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      best = json.load(f)
    task = get_task(name)
    scores[task.name] = best["dev_metrics"][task.primary_metric]
    searches[task.name] = dict(trials=best["trials_completed"], hyperparameters=best["hyperparameters"])
  names = sorted(get_task(t).name for t in tasks)
  cells = [f"{100 * scores[t]:.1f}" if t in scores else "-" for t in names]
  mean = 100 * sum(scores.values()) / len(scores) if scores else float("nan")
  row = ("| AutoML baseline (no BERT) | " + " | ".join(cells)
         + f" | {mean:.1f} ({len(scores)} tasks) | - | - |")
  trials = ", ".join(f"{t} {s['trials']}" for t, s in sorted(searches.items()))
  note = (f"AutoML baseline: `automl-baseline search` per task into {automl_dir}/<task> (wide & deep networks "
          "over text-embedding modules, no BERT; a classifier search, so no STS-B; "
          "`benchmarks/automl_glue.sh` states its budget); the best model's dev metric. Trials per task: "
          f"{trials}. Its mean is over the tasks it ran, not comparable to the 5-task means.")
  return dict(row=row, note=note, summary=dict(scores=scores, mean=mean / 100, searches=searches))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--protocol", choices=("fixed", "paper"), default="fixed",
                      help="fixed: one learning rate per method, one seed (default); paper: the paper's sweep, "
                           "best run on dev, test-server files (see the module docstring)")
  parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "glue"))
  parser.add_argument("--encoder", default="minilm-l6", help="any encoder spec `train --encoder` takes")
  parser.add_argument("--tasks", nargs="+", default=list(TASKS))
  parser.add_argument("--max-train-examples", type=int, default=10000,
                      help="per task (default: every training set in full but SST-2's 67k)")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0, help="--protocol fixed's one seed")
  parser.add_argument("--runs-dir", help="default: runs/glue_reproduction, runs/glue_paper with --protocol paper")
  parser.add_argument("--out-md", help="default: docs/results/glue_minilm.md (glue_minilm_paper.md with "
                                       "--protocol paper)")
  parser.add_argument("--out-json", help="default: the --out-md path with .json")
  parser.add_argument("--automl-dir", help="adds the no-BERT AutoML baseline row from DIR/<task>/best.json "
                                           "(`automl-baseline search --task T ... --out DIR/T`)")
  paper = parser.add_argument_group("--protocol paper")
  paper.add_argument("--methods", nargs="+", default=list(PAPER_METHODS),
                     choices=PAPER_METHOD_CHOICES)
  paper.add_argument("--learning-rates", type=float, nargs="+", default=list(PAPER_LEARNING_RATES),
                     help="the adapter and LayerNorm sweeps' (default: §3.2's 3e-5 3e-4 3e-3)")
  paper.add_argument("--fine-tune-learning-rates", type=float, nargs="+",
                     default=list(PAPER_FINE_TUNE_LEARNING_RATES), help="the full and top-k sweeps'")
  paper.add_argument("--method-learning-rates", nargs="+", default=[], metavar="METHOD=LR[,LR...]",
                     help="one method's own learning rates, over the two lists above (a budget's cut)")
  paper.add_argument("--adapter-sizes", type=int, nargs="+", default=list(PAPER_ADAPTER_SIZES))
  paper.add_argument("--top-ks", type=int, nargs="+", default=[1, 3], help="top-k's numbers of layers")
  paper.add_argument("--seeds", type=int, nargs="+", default=list(PAPER_SEEDS))
  paper.add_argument("--report-only", action="store_true",
                     help="train nothing: the tables and server files from the trials finished so far")
  paper.add_argument("--submission-dir", help="where the GLUE server files go (default RUNS_DIR/submission; "
                                              "must be new or empty)")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.data_dir):
    sys.exit(f"error: GLUE data dir {args.data_dir} not found")
  if args.max_train_examples < 1 or args.epochs < 1:
    parser.error("--max-train-examples and --epochs must be >= 1")
  if args.protocol == "paper":
    return paper_protocol(args, argv)
  args.runs_dir = args.runs_dir or os.path.join("runs", "glue_reproduction")
  args.out_md = args.out_md or os.path.join("docs", "results", "glue_minilm.md")
  args.out_json = args.out_json or os.path.splitext(args.out_md)[0] + ".json"
  run_dirs, train_sizes = [], {}
  for task_name in args.tasks:
    task, train, dev = load_task_data(DataSource(task=task_name, data_dir=args.data_dir))
    train_sizes[task.name] = (min(len(train), args.max_train_examples), len(train))
    for name, config in run_configs(args.max_train_examples, args.epochs, args.seed, args.encoder):
      out = os.path.join(args.runs_dir, f"{task.name}-{name}")
      run_dirs.append(out)
      if os.path.exists(os.path.join(out, "metrics.json")):
        print(f"[bench] {task.name} {name}: done earlier, skipped", flush=True)
        continue
      print(f"[bench] {task.name} {name}: training", flush=True)
      result, _ = train_task(task, train, dev, config, out_dir=out, verbose=False)
      print(f"[bench] {task.name} {name}: {task.primary_metric} {result.score:.4f} "
            f"(best epoch {result.best_epoch}, {result.seconds:.0f}s)", flush=True)

  runs = collect_runs(run_dirs)
  sized = [dict(r, method="adapter (best size)") for r in runs if r["method"] == "adapter"]
  size64 = [dict(r, method="adapter (size 64)") for r in runs
            if r["method"] == "adapter" and r["config"]["adapter"]["size"] == 64]
  others = [r for r in runs if r["method"] != "adapter"]
  table, summary = markdown_table(sized + size64 + others)
  full_mean = summary.get("full", {}).get("mean")
  checks = {}
  if full_mean is not None:
    best = summary["adapter (best size)"]
    checks = {
        "adapters_best_size_mean_minus_full": 100 * (best["mean"] - full_mean),
        "adapters_best_size_trained_percent": best["trained_percent_per_task"],
        "adapters_size64_mean_minus_full": 100 * (summary["adapter (size 64)"]["mean"] - full_mean),
        "layer_norm_mean_minus_full": 100 * (summary["layer-norm"]["mean"] - full_mean),
    }
  targets = {
      "adapters (best size) mean >= full - 0.5": checks["adapters_best_size_mean_minus_full"] >= -0.5,
      "adapters (best size) trained <= 4% per task": checks["adapters_best_size_trained_percent"] <= 4.0,
      "adapters (size 64) mean >= full - 1.0": checks["adapters_size64_mean_minus_full"] >= -1.0,
      "LayerNorm-only clearly below full (>= 1 point)": checks["layer_norm_mean_minus_full"] <= -1.0,
  } if checks else {}
  adapter_runs = [r for r in runs if r["method"] == "adapter"]
  share = {r["config"]["adapter"]["size"]: 100 * r["trained_fraction"] for r in adapter_runs}
  chosen = {t: max((r for r in adapter_runs if r["task"] == t), key=lambda r: r["score"])["config"]["adapter"]["size"]
            for t in sorted({r["task"] for r in adapter_runs})}
  sizes_note = ("Trained parameters per adapter size on this base (adapters, LayerNorms, head): "
                + ", ".join(f"size {m} {p:.2f}%" for m, p in sorted(share.items()))
                + "; best size on dev per task: " + ", ".join(f"{t} {m}" for t, m in chosen.items()) + ".")
  within_budget = [dict(r, method="adapter (<= 4%)") for r in adapter_runs if r["trained_fraction"] <= 0.04]
  if full_mean is not None and within_budget:
    # Selected and averaged exactly as the table's rows are (best dev score per task).
    within_mean = markdown_table(within_budget)[1]["adapter (<= 4%)"]["mean"]
    checks["adapters_best_size_within_4pct_mean_minus_full"] = 100 * (within_mean - full_mean)
    sizes_note += (" Choosing the best size only among those that train <= 4% (sizes "
                   + ", ".join(str(m) for m in sorted({r["config"]["adapter"]["size"] for r in within_budget}))
                   + f") gives a mean {checks['adapters_best_size_within_4pct_mean_minus_full']:+.2f} points "
                   "from full fine-tuning.")
  automl = automl_baseline_row(args.automl_dir, args.tasks) if args.automl_dir else None
  if automl:
    table += "\n" + automl["row"]
  # Summed over the runs (each run's own time, resumed parts included), so a
  # benchmark resumed over several sessions still reports its whole cost.
  seconds = sum(r["seconds"] for r in runs)
  command = run_grid.benchmark_command(__file__, argv)
  used = ", ".join(f"{name} {n:,}" + (f" of {total:,}" if n < total else "")
                   for name, (n, total) in train_sizes.items())
  budget = (f"{len(args.tasks)} tasks; at most {args.max_train_examples:,} training examples per task "
            f"(a seeded subsample where a set is larger; used: {used}), {args.epochs} epochs, 1 seed "
            f"({args.seed}), batch 32, max length 128, "
            f"fixed learning rates {LEARNING_RATES}; dev sets in full; metric = primary dev metric x 100 "
            "of the best epoch")
  print(table)
  print(json.dumps(dict(checks, targets=targets), indent=2))
  write_json_atomic(args.out_json, dict(summary=summary, checks=checks, targets=targets,
                                        automl_baseline=automl and automl["summary"], budget=budget,
                                        command=command,
                                        seconds=seconds, train_examples={k: n for k, (n, _) in train_sizes.items()},
                                        runs=[{k: r[k] for k in ("task", "method", "score", "metrics",
                                                                 "trained_params", "trained_fraction",
                                                                 "best_epoch", "seconds")}
                                              | {"adapter_size": r["config"]["adapter"]["size"]
                                                 if r["method"] == "adapter" else None}
                                              for r in runs]))
  os.makedirs(os.path.dirname(args.out_md) or ".", exist_ok=True)
  with open(args.out_md, "w", encoding="utf-8") as f:
    f.write(f"# GLUE on MiniLM-L6: adapters vs fine-tuning (measured)\n\nCommand: `{command}`\n\n"
            f"Budget: {budget}. Training and evaluation time, summed over the runs: {seconds / 60:.0f} min on "
            f"a 2-core CPU.\n\n{table}\n\n"
            "Differences in points (mean over tasks):\n\n"
            + "\n".join(f"- {k}: {v:.2f}" for k, v in checks.items()) + "\n\n"
            "Targets (issue #3):\n\n"
            + "\n".join(f"- {k}: {'met' if ok else 'MISSED'}" for k, ok in targets.items()) + "\n\n"
            + sizes_note + "\n"
            + (f"\n{automl['note']}\n" if automl else ""))
  return 0


def _method_learning_rates(values) -> dict:
  """--method-learning-rates METHOD=LR[,LR...] as {method: [lr, ...]} (analysis/run_grid.py parses them)."""
  try:
    rates = run_grid.parse_learning_rates(values, PAPER_METHOD_CHOICES, {}, flag="--method-learning-rates")
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  return {method: list(listed) for method, listed in rates.items()}


def _sweep_grid(method: str, args):
  from adapter_keras.train.sweep import SweepGrid  # pylint: disable=import-outside-toplevel
  fine_tunes = method in ("full", "top-k")
  learning_rates = _method_learning_rates(args.method_learning_rates).get(
      method, args.fine_tune_learning_rates if fine_tunes else args.learning_rates)
  # Without adapters the grid has one size entry, which the sweep records as adapter_size 0.
  sizes = args.adapter_sizes if method == "adapter" else [] if method == "top-k" else args.adapter_sizes[:1]
  return SweepGrid(learning_rates=learning_rates, epochs=[args.epochs], adapter_sizes=sizes, seeds=args.seeds,
                   top_ks=args.top_ks if method == "top-k" else None)


def _runs_grid(runs) -> str:
  """What the finished runs cover, per task and method (a sweep cut short, or run with other flags
  for one task, is stated as it is): e.g. "rte adapter: lr 0.0003/0.003, size 8/64, seeds 0/1/2
  (12 runs)"."""
  cells = {}
  for run in runs:
    config = run["config"]
    cell = cells.setdefault((run["task"], run["method"]), dict(lr=set(), size=set(), top_k=set(), seed=set(), n=0))
    cell["lr"].add(config.get("learning_rate"))
    cell["seed"].add(config.get("seed"))
    if run["method"] == "adapter":
      cell["size"].add((config.get("adapter") or {}).get("size"))
    if config.get("top_k") is not None and run["method"] == "top-k":
      cell["top_k"].add(config["top_k"])
    cell["n"] += 1

  def listed(values):
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(values))

  return "; ".join(
      f"{task} {method}: lr {listed(c['lr'])}" + (f", size {listed(c['size'])}" if c["size"] else "")
      + (f", top {listed(c['top_k'])} layers" if c["top_k"] else "") + f", seeds {listed(c['seed'])} ({c['n']} runs)"
      for (task, method), c in sorted(cells.items()))


def _best_adapter_runs(runs) -> dict:
  """{task: the run directory of the adapters' cell in the best-run table}: report.select_run's
  choice, the same run the table shows, for the tasks where that run kept its artifact."""
  chosen = {}
  for task in sorted({r["task"] for r in runs if r["method"] == "adapter"}):
    run = select_run([r for r in runs if r["task"] == task and r["method"] == "adapter"], "best-run")
    if os.path.isdir(os.path.join(run["run_dir"], "artifact")):
      chosen[task] = run["run_dir"]
  return chosen


def paper_protocol(args, argv) -> int:
  """--protocol paper: the sweeps, the two rules' tables, the GLUE server files (module docstring)."""
  from adapter_keras.serving.glue_submission import write_glue_submission  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.sweep import run_sweep  # pylint: disable=import-outside-toplevel
  runs_dir = args.runs_dir or os.path.join("runs", "glue_paper")
  out_md = args.out_md or os.path.join("docs", "results", "glue_minilm_paper.md")
  out_json = args.out_json or os.path.splitext(out_md)[0] + ".json"
  submission_dir = args.submission_dir or os.path.join(runs_dir, "submission")
  grids = {method: _sweep_grid(method, args) for method in args.methods}  # a bad grid fails before training
  started = time.monotonic()
  sweep_dirs, train_sizes = [], {}
  for task_name in args.tasks:
    task, train, dev = load_task_data(DataSource(task=task_name, data_dir=args.data_dir))
    train_sizes[task.name] = (min(len(train), args.max_train_examples), len(train))
    for method, grid in grids.items():
      out = os.path.join(runs_dir, task.name, method)
      if args.report_only:
        if glob.glob(os.path.join(out, "trials", "*", "metrics.json")):  # at least one finished trial
          sweep_dirs.append(out)
        continue
      print(f"[bench] {task.name} {method}: sweep of {grid.size} trials into {out}", flush=True)
      base = TrainConfig(encoder=args.encoder, method=method, learning_rate=grid.learning_rates[0],
                         epochs=args.epochs, batch_size=32, max_seq_length=128,
                         max_train_examples=args.max_train_examples,
                         top_k=grid.top_ks[0] if grid.top_ks else None)
      run_sweep(task, train, dev, base, grid, out, select="best-run", save_artifacts=method == "adapter")
      sweep_dirs.append(out)
  runs = collect_runs(sweep_dirs)
  best_runs = _best_adapter_runs(runs)
  table, summary = markdown_table(runs, select="best-run")
  mean_table, mean_summary = markdown_table(runs, select="best-mean")
  submission = None
  previous = os.path.join(submission_dir, "submission.json")
  if best_runs and os.path.isdir(submission_dir) and os.listdir(submission_dir):
    # A resumed benchmark never overwrites files: an earlier submission stays as it is.
    print(f"[bench] {submission_dir} is not empty: GLUE server files not written again (give a new "
          "--submission-dir)", flush=True)
    if os.path.exists(previous):
      submission = read_json_object(previous, "a glue-submission summary")
  elif best_runs:
    submission = write_glue_submission(best_runs, args.encoder, args.data_dir, submission_dir)
  seconds = sum(r["seconds"] for r in runs)
  command = run_grid.benchmark_command(__file__, argv)
  used = ", ".join(f"{name} {n:,}" + (f" of {total:,}" if n < total else "")
                   for name, (n, total) in train_sizes.items())
  grid_text = _runs_grid(runs)
  budget = (f"{len(args.tasks)} tasks ({', '.join(train_sizes)}); at most {args.max_train_examples:,} training "
            f"examples per task (used: {used}), {args.epochs} epochs (the best epoch's dev score), seeds "
            f"{list(args.seeds)}, batch 32, max length 128; {grid_text}; dev sets in full")
  print(f"best run on dev (the paper's rule), +- s.e.m. over seeds of its setting:\n{table}\n\n"
        f"best mean over seeds:\n{mean_table}")
  if submission:
    print(f"GLUE server files in {submission_dir}: predicted {', '.join(submission['predicted'])}")
  write_json_atomic(out_json, dict(
      protocol="paper", command=command, budget=budget, seconds=seconds,
      wall_seconds_this_invocation=time.monotonic() - started, best_run=summary, best_mean=mean_summary,
      submission=submission and dict(submission, dir=submission_dir), best_runs=best_runs,
      trials=[{k: r[k] for k in ("task", "method", "score", "trained_params", "trained_fraction", "best_epoch",
                                 "seconds")}
              | {k: r["config"].get(k) for k in ("learning_rate", "seed", "top_k")}
              | {"adapter_size": (r["config"].get("adapter") or {}).get("size") if r["method"] == "adapter"
                 else None} for r in runs]))
  os.makedirs(os.path.dirname(out_md) or ".", exist_ok=True)
  write_text_atomic(out_md, (
      "# GLUE on MiniLM-L6 with the paper's protocol (measured)\n\n"
      f"Command: `{command}`\n\nBudget: {budget}. Training and evaluation time, summed over the "
      f"{len(runs)} runs: {seconds / 60:.0f} min on a {os.cpu_count()}-core CPU.\n\n"
      "Each cell: the single run with the best dev score (the paper's selection rule), +- the s.e.m. over "
      f"seeds of that run's setting.\n\n{table}\n\nThe setting with the best mean over seeds instead:\n\n"
      f"{mean_table}\n"
      + (f"\nGLUE server files from the adapters' best runs: `{submission_dir}` ({', '.join(submission['predicted'])}"
         f"; {submission['zip']}).\n" if submission else "")))
  print(f"wrote {out_md} and {out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
