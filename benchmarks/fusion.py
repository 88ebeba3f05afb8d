"""AdapterFusion measured (issue #29 item 6): on RTE and MRPC as targets, fusing adapters trained on SST-2, CoLA,
STS-B and the other target, against the target's own single adapter and full fine-tuning, on MiniLM-L6.

Phase "sources": one adapter per source task (`--sources`, default sst2 cola stsb rte mrpc), Pfeiffer placement
(one bottleneck after the FFN, the adapters AdapterFusion's paper fuses) of size 64, seed 0, learning rate 3e-3
(the rate 17 of method_comparison.py's 18 SST-2 cells chose), --epochs epochs on at most --source-train-examples
examples, keeping its artifact under RUNS_DIR/sources/<task>/artifact.

Phase "targets": per target (`--targets`, default rte mrpc) three cells, each trained at two learning rates and
three seeds (`--lr-search first-seed`: both rates with the first seed, the other seeds at the better one):

  adapter  the target's own adapter, as the sources (the paper's ST-A)   1e-3, 3e-3
  fusion   AdapterFusion over the sources that are not the target        3e-4, 1e-3  (the fusion's Q/K/V are d x d,
           (for RTE: SST-2, CoLA, STS-B and MRPC), V from the identity                like full fine-tuning's layers,
                                                                                      trained in ~100 steps; the
                                                                                      AdapterFusion paper's own rate
                                                                                      is not in ../shared/seeds)
  full     full fine-tuning                                              3e-5, 1e-4

Each run: at most --max-train-examples training examples (a seeded subsample that differs by seed; default
1,000), the dev set in full, --epochs epochs (default 3) with the best epoch's dev score, batch 32, max length
128, under RUNS_DIR/<target>/<cell>/lr<lr>-seed<seed>. Each cell reports its best run (the paper's rule) and the
mean +- s.e.m. over seeds at the learning rate with the best mean among those trained with every seed
(analysis/run_grid.py). A run directory holding
the same finished run is reused (the run identity), so an interrupted benchmark resumes; after every target the
results are written again (docs/results/fusion.{json,md}), marking each target complete, partial or missing, and
the fusion attention of the target's best fusion run over its dev set is plotted (analysis/fusion.py, the
paper's Figure 6: docs/figures/fusion_<target>.png). Fusion runs keep their artifacts (the figure reads them).

Budget (estimated from method_comparison.py's measured adapter runs on 2 idle cores, RTE ~190 s and MRPC ~130 s
at 1,000 examples and 3 epochs; a fusion run computes 4 source adapters and its attention besides, about 1.5x):
sources ~20 minutes; RTE 12 runs ~45 minutes; MRPC 12 runs ~30 minutes; about 1 hour 40 minutes in all.

  python benchmarks/fusion.py --plan
  python benchmarks/fusion.py                     # sources, then rte and mrpc; commit docs/ after each target
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.analysis.run_grid import lr_text  # noqa: E402
from adapter_keras.io import write_json_atomic, write_text_atomic  # noqa: E402

LOG = "[fusion]"
SOURCES = ("sst2", "cola", "stsb", "rte", "mrpc")
TARGETS = ("rte", "mrpc")
SEEDS = (0, 1, 2)
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 128
ADAPTER_SIZE = 64
SOURCE_LEARNING_RATE = 3e-3
CELLS = ("adapter", "fusion", "full")
LEARNING_RATES = {"adapter": (1e-3, 3e-3), "fusion": (3e-4, 1e-3), "full": (3e-5, 1e-4)}


def adapter_config():
  from adapter_keras.config import AdapterConfig  # pylint: disable=import-outside-toplevel
  return AdapterConfig.named("pfeiffer", size=ADAPTER_SIZE)


def source_dir(args, task: str) -> str:
  return os.path.join(args.runs_dir, "sources", task)


def source_artifact(args, task: str) -> str:
  return os.path.abspath(os.path.join(source_dir(args, task), "artifact"))


def fused_sources(args, target: str) -> List[str]:
  """The sources a target fuses: every source task but itself."""
  return [source_artifact(args, t) for t in args.sources if t != target]


def train_config(args, target: str, cell: str, learning_rate: float, seed: int, max_examples: int):
  from adapter_keras.train.config import TrainConfig  # pylint: disable=import-outside-toplevel
  fields = dict(adapter=adapter_config(), method="adapter")
  if cell == "fusion":
    fields = dict(method="fusion", method_config=dict(sources=fused_sources(args, target)))
  elif cell == "full":
    fields = dict(method="full")
  return TrainConfig(encoder=args.encoder, learning_rate=learning_rate, epochs=args.epochs, batch_size=BATCH_SIZE,
                     max_seq_length=MAX_SEQ_LENGTH, seed=seed, max_train_examples=max_examples, **fields)


def run_dir(args, target: str, cell: str, lr: float, seed: int) -> str:
  return os.path.join(args.runs_dir, target, cell, f"lr{lr_text(lr)}-seed{seed}")


def planned_runs(args, target: str, cell: str) -> List[Tuple[float, int]]:
  return run_grid.planned_runs(args.rates[cell], args.seeds, args.lr_search,
                               lambda lr, seed: run_dir(args, target, cell, lr, seed))


def _train(task, train, dev, config, out: str, save_model: bool, name: str, counts: Dict):
  import tf_keras  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import train_task  # pylint: disable=import-outside-toplevel
  try:
    result, model = train_task(task, train, dev, config, out_dir=out, verbose=False, save_model=save_model)
  except FileExistsError as e:
    sys.exit(f"error: {e} (the runs there were made with other settings: give another --runs-dir)")
  counts["reused" if model is None else "trained"] += 1
  print(f"{LOG} {name}: {task.primary_metric} {result.score:.4f} "
        + ("(reused)" if model is None else f"({result.seconds:.0f} s)"), flush=True)
  del model
  tf_keras.backend.clear_session()  # each run builds its own model: a long benchmark does not slow down
  return result


def train_sources(args, data, counts: Dict) -> None:
  for task_name in args.sources:
    task, train, dev = data(task_name)
    config = train_config(args, task_name, "adapter", SOURCE_LEARNING_RATE, 0, args.source_train_examples)
    _train(task, train, dev, config, source_dir(args, task_name), True, f"source {task_name}", counts)


def train_target(args, target: str, data, counts: Dict) -> None:
  task, train, dev = data(target)
  for cell in CELLS:
    done = set()
    while True:
      todo = [r for r in planned_runs(args, target, cell) if r not in done]
      if not todo:
        break
      for lr, seed in todo:
        done.add((lr, seed))
        config = train_config(args, target, cell, lr, seed, args.max_train_examples)
        _train(task, train, dev, config, run_dir(args, target, cell, lr, seed), cell == "fusion",
               f"{target} {cell} lr{lr_text(lr)} seed{seed}", counts)


# ----------------------------------------------------------------------------- results


def gather(args) -> Tuple[Dict, Dict, Dict]:
  """({target: {cell: summary}}, {target: status}, {source: dev score}) from the finished runs on disk."""
  scores, status = {}, {}
  for target in args.targets:
    done = expected = 0
    for cell in CELLS:
      runs = [r for r in (run_grid.finished_run(run_dir(args, target, cell, lr, seed))
                          for lr, seed in planned_runs(args, target, cell)) if r is not None]
      done += len(runs)
      expected += run_grid.runs_expected(len(args.rates[cell]), args.seeds, args.lr_search)
      if runs:
        scores.setdefault(target, {})[cell] = run_grid.summarize(runs)
    status[target] = dict(status=run_grid.status(done, expected), runs_finished=done, runs_planned=expected)
  sources = {}
  for task in args.sources:
    run = run_grid.finished_run(source_dir(args, task))
    if run is not None:
      sources[task] = dict(score=run["score"], metric=run.get("metric"), trained_params=run["trained_params"])
  return scores, status, sources


def fusion_figure(args, target: str, summary: Dict, data) -> Dict:
  """The fusion attention of the target's best fusion run over its dev set, plotted."""
  from adapter_keras.analysis.fusion import fusion_weights, plot_fusion_weights  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import load_adapter  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  best = summary["best_run"]
  model = load_adapter(os.path.join(run_dir(args, target, "fusion", best["learning_rate"], best["seed"]), "artifact"),
                       args.encoder)
  task, _, dev = data(target)
  split = task.dev_splits[0]
  result = fusion_weights(model, encode_examples(model.preprocessor, dev[split]))
  result.update(title=f"{target} ({split}): fusion attention of the best fusion run", split=split,
                run=dict(best))
  path = os.path.join(args.figures_dir, f"fusion_{target}.png")
  os.makedirs(args.figures_dir, exist_ok=True)
  plot_fusion_weights(result, path)
  return dict(result, png=path)


def _cell_text(summary) -> str:
  if summary is None:
    return "-"
  sem = "" if summary["sem"] is None else f" ± {100 * summary['sem']:.1f}"
  return f"{100 * summary['mean']:.1f}{sem} ({100 * summary['best_run']['score']:.1f})"


def write_outputs(args, data, command: str, figures: Dict) -> None:
  scores, status, sources = gather(args)
  for target, cells in scores.items():
    if "fusion" in cells and status[target]["status"] == "complete" and target not in figures:
      figures[target] = fusion_figure(args, target, cells["fusion"], data)
  budget = (f"sources {', '.join(args.sources)}: Pfeiffer adapters of size {ADAPTER_SIZE}, seed 0, learning rate "
            f"{lr_text(SOURCE_LEARNING_RATE)}, at most {args.source_train_examples:,} training examples; targets "
            f"{', '.join(args.targets)}: at most {args.max_train_examples:,} training examples (a seeded "
            f"subsample, drawn per seed), dev sets in full; {args.epochs} epochs (the best epoch's dev score), "
            f"batch {BATCH_SIZE}, max length {MAX_SEQ_LENGTH}; seeds {list(args.seeds)}; learning rates "
            + ", ".join(f"{c} {'/'.join(lr_text(lr) for lr in args.rates[c])}" for c in CELLS)
            + f" ({args.lr_search})")
  write_json_atomic(args.out_json, dict(command=command, encoder=args.encoder, budget=budget, sources=sources,
                                        targets=status, scores=scores, fusion_weights=figures,
                                        learning_rates={c: list(args.rates[c]) for c in CELLS}))
  lines = ["| target | " + " | ".join(CELLS) + " | fusion - adapter |", "|---" * (len(CELLS) + 2) + "|"]
  for target in args.targets:
    cells = scores.get(target, {})
    gain = "-"
    if "fusion" in cells and "adapter" in cells:
      gain = f"{100 * (cells['fusion']['mean'] - cells['adapter']['mean']):+.1f}"
    lines.append(f"| {target} ({status[target]['status']}) | "
                 + " | ".join(_cell_text(cells.get(c)) for c in CELLS) + f" | {gain} |")
  source_lines = [f"- {t}: dev {100 * s['score']:.1f}, {s['trained_params']:,} trained parameters"
                  for t, s in sources.items()]
  docs_dir = os.path.dirname(os.path.abspath(args.out_md))
  figure_lines = [f"![{t}: fusion attention]({os.path.relpath(f['png'], docs_dir)})" for t, f in figures.items()]
  text = (f"# AdapterFusion on {args.encoder} (measured)\n\nCommand: `{command}`\n\nBudget: {budget}.\n\n"
          "Each cell: the mean ± s.e.m. over seeds of the primary dev metric x 100 at the learning rate with the best "
          "mean, and in parentheses the best single run (the paper's rule).\n\n" + "\n".join(lines) + "\n\n"
          + "Sources:\n\n" + ("\n".join(source_lines) or "- none finished yet") + "\n\n"
          + "\n\n".join(figure_lines) + ("\n" if figure_lines else ""))
  write_text_atomic(args.out_md, text)
  print(f"{LOG} wrote {args.out_json}, {args.out_md}; targets: "
        + "; ".join(f"{t} {s['status']} ({s['runs_finished']}/{s['runs_planned']} runs)" for t, s in status.items()),
        flush=True)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoder", default="minilm-l6", help="any encoder spec `train --encoder` takes")
  parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "glue"))
  parser.add_argument("--sources", nargs="+", default=list(SOURCES))
  parser.add_argument("--targets", nargs="+", default=list(TARGETS))
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--max-train-examples", type=int, default=1000)
  parser.add_argument("--source-train-examples", type=int, default=2000)
  parser.add_argument("--learning-rates", nargs="+", default=[], metavar="CELL=LR[,LR...]",
                      help="a cell's own learning rates instead of its defaults (module docstring)")
  parser.add_argument("--lr-search", choices=run_grid.LR_SEARCHES, default="first-seed")
  parser.add_argument("--runs-dir", default=os.path.join("runs", "fusion"))
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "fusion.json"))
  parser.add_argument("--out-md", default=os.path.join("docs", "results", "fusion.md"))
  parser.add_argument("--figures-dir", default=os.path.join("docs", "figures"))
  parser.add_argument("--plan", action="store_true", help="print the runs and exit")
  parser.add_argument("--report-only", action="store_true", help="train nothing: the outputs from the finished runs")
  args = parser.parse_args(argv)
  try:
    args.rates = run_grid.parse_learning_rates(args.learning_rates, CELLS, LEARNING_RATES)
  except ValueError as e:
    parser.error(str(e))
  missing = [t for t in args.targets if t not in args.sources]
  if missing or args.max_train_examples < 1 or args.epochs < 1:
    parser.error(f"every target must be a source too (its adapter is the single-adapter baseline): {missing}"
                 if missing else "--max-train-examples and --epochs must be >= 1")
  if len(args.sources) < 2:
    parser.error("fusion needs at least one source besides the target: give two or more --sources")
  if args.plan:
    for target in args.targets:
      for cell in CELLS:
        planned = ", ".join(f"lr{lr_text(lr)}-seed{seed}" for lr, seed in planned_runs(args, target, cell))
        print(f"{target} {cell}: {planned}")
    print("fusion sources: " + "; ".join(f"{t} <- {', '.join(s for s in args.sources if s != t)}"
                                          for t in args.targets))
    return 0
  if not os.path.isdir(args.data_dir):
    sys.exit(f"error: GLUE data dir {args.data_dir} not found")
  from adapter_keras.tasks.sources import DataSource, load_task_data  # pylint: disable=import-outside-toplevel
  cache = {}

  def data(name: str):
    if name not in cache:
      cache[name] = load_task_data(DataSource(task=name, data_dir=args.data_dir))
    return cache[name]

  for path in (args.out_json, args.out_md):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  command = run_grid.benchmark_command(__file__, argv)
  counts, figures = dict(trained=0, reused=0), {}
  if not args.report_only:
    started = time.monotonic()
    train_sources(args, data, counts)
    print(f"{LOG} sources ready ({time.monotonic() - started:.0f} s)", flush=True)
    for target in args.targets:
      train_target(args, target, data, counts)
      write_outputs(args, data, command, figures)
  else:
    write_outputs(args, data, command, figures)
  print(f"{LOG} runs trained {counts['trained']}, reused {counts['reused']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
