"""Token classification measured (issue #28 item 5): Houlsby adapters and full fine-tuning of MiniLM-L6 on the
WNUT-17 and WikiANN English test sets, three seeds, beside the published numbers.

Tasks: wnut17, wikiann-en, two-column CoNLL files DATA_DIR/<task>/{train,dev,test}.conll (default
../shared/data/tagging; the label set is the training file's, a dev/test tag outside it is an error before
anything trains). Methods (`--methods`):

  adapter   Houlsby adapters, two per block, size 64 (`--adapter-size`): the paper's middle size (it swept
            {8, 64, 256}); at 64 MiniLM-L6 trains ~2.6% of its parameters, where the paper's GLUE numbers sit
            within 0.4 of full fine-tuning, and NER heads read every token, so a small bottleneck costs more
  full      full fine-tuning, the reference

Learning rates, two per method (`--learning-rates METHOD=LR,LR` overrides):
  adapter  1e-3, 3e-3   Houlsby et al. 2019 §3.2 swept {3e-5, 3e-4, 3e-3}; the top of that grid and one step below
                        it: on SST-2 at ~100 steps 17 of method_comparison.py's 18 cells chose the higher of their
                        rates, and with fewer steps (1,200 WNUT-17 sentences, 2 epochs) both 1e-3 and 3e-3 left
                        the tagger at the all-O prior (F1 0). On the full WNUT-17 budget 3e-3 still ends there
                        (seed 0) while 1e-3 learns, so the best rate may lie at 1e-3 or below it, untested here
  full     5e-5, 1e-4   Devlin et al. 2019 §A.3: {2e-5, 3e-5, 5e-5}, the top of it; small models such as MiniLM
                        take up to 1e-4

Protocol: per task, method, learning rate and seed one `train_token` run (train/run.py) under
RUNS_DIR/<task>/<method>/lr<lr>-seed<seed>: at most --max-train-examples training sentences (a seeded subsample
that differs by seed; per task by default (TASK_BUDGETS): WNUT-17 all 3,394 (the cap is 5,000), WikiANN 2,000 of
its 20,000), --epochs epochs (default 3) keeping the epoch with the best dev entity F1, batch 32, max length 128,
windows of stride 64, the first sub-word of each word labelled. The dev set (at most --max-dev-examples
sentences; by default all of WNUT-17's 1,009 (the cap is 2,000), a fixed seed-0 subsample of 1,000 of WikiANN's
10,000, the same for every run) picks the epoch and the
learning rate; it is scored after every epoch, so its size is paid three times per run. `--lr-search
first-seed` (default) trains both learning rates with the first seed and the other seeds only at the better one
(4 runs per cell); `grid` trains all 6. The test set, in full, is scored once per run, right after training, by
the best epoch's model still in memory, and stored beside the run as test_metrics.json (with the digest of
the test sentences): runs keep no artifact (a full fine-tuned MiniLM is 90 MB), and scoring every run's test
costs about what scoring only the chosen runs would (3 or 4 of a cell's 4 runs are chosen). Test scores never
choose anything: each cell reports its best run by dev F1 (the paper's rule) with that run's test scores,
and the mean +- s.e.m. over seeds of the test scores at the learning rate with the best dev mean
(analysis/run_grid.py, shared with method_comparison.py: report.select_run's two rules). Entity F1 (primary),
precision and recall are conlleval's (seqeval's default mode), token accuracy is over words.

A run directory holding the same finished run is reused (train/run_dir.py: the run identity), so an interrupted
benchmark resumes; a finished run whose test scores are missing (killed between the two) or were made on other
test sentences is trained again. After every task the results are written again (docs/results/
token_classification.{json,md}), marking each task complete, partial or missing. `--plan` prints the runs and
their state and exits; `--report-only` writes the results from the finished runs.

MiniLM-L6 (all-MiniLM-L6-v2) is uncased: NER loses the capitalisation cue, and the published anchors (cased
BERT-base-class models, full training sets, more epochs) are an upper reference, not a like-for-like one.

Budget, measured with MiniLM-L6 on 2 CPU cores shared with another benchmark (benchmark-style runs of 64 and
448 training sentences, 1 epoch, ~9-10 s of build and dev overhead each; 26 s for the adapter run of 448 WNUT-17
sentences): training ~24 sentences/s with adapters and ~20/s fully fine-tuned on WNUT-17 (18.5 words per
sentence), ~21/s with adapters on WikiANN (8 words: per-batch cost dominates); scoring ~58 WNUT-17 and ~92 WikiANN
sentences/s. Per run: WNUT-17 (3,394 x 3 epochs, 3 x 1,009 dev, 1,287 test) ~9 min adapter, ~10 min full;
WikiANN at 5,000 x 3, 3 x 2,000 dev and 10,000 test would take ~15 min adapter, ~17 min full, so its default
budget is 2,000 x 3 and 3 x 1,000 dev (~7 min adapter, ~8 min full). 16 runs (2 tasks x 2 methods x 4): WNUT-17
~75 min, WikiANN ~1 hour, about 2 1/4 hours in all (less on idle cores). One task per sitting:

  python benchmarks/token_classification.py --plan
  python benchmarks/token_classification.py --tasks wnut17        # then wikiann-en; commit after each
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.analysis.report import select_run  # noqa: E402
from adapter_keras.analysis.run_grid import lr_text  # noqa: E402
from adapter_keras.io import read_json_object, write_json_atomic, write_text_atomic  # noqa: E402

LOG = "[token_classification]"
TASKS = ("wnut17", "wikiann-en")
METHODS = {"adapter": (1e-3, 3e-3), "full": (5e-5, 1e-4)}  # the default learning rates (module docstring)
SEEDS = (0, 1, 2)
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 128
TEST_FILE = "test_metrics.json"
METRICS = ("f1", "precision", "recall", "accuracy")
# ../shared/data/README.md, section "Token classification", quoted as it asks: check the source before citing.
PUBLISHED = {
    "wnut17": "WNUT-17 test entity F1: the 2017 shared task's best system 41.9, BERT-base-class fine-tuning "
              "reported in the mid-40s to about 50",
    "wikiann-en": "WikiANN English (PAN-X en) test F1 of mBERT fine-tuning about 84-85 (XTREME)",
}
# (training, dev) sentences per task when the flags do not say. WNUT-17's caps exceed its files (all of both);
# WikiANN's keep its 3 x 4 runs at about 1 hour on 2 cores (a tenth of its training set, a tenth of its dev set).
TASK_BUDGETS = {"wnut17": (5000, 2000), "wikiann-en": (2000, 1000)}
DEFAULT_BUDGET = (5000, 2000)
PUBLISHED_NOTE = "quoted from ../shared/data/README.md, which says: check the source before citing"


def budget(args, task: str) -> Tuple[int, Optional[int]]:
  """(at most how many training sentences, at most how many dev sentences (None: all)) of `task`: the flags when
  given, else TASK_BUDGETS."""
  train, dev = TASK_BUDGETS.get(task, DEFAULT_BUDGET)
  train = train if args.max_train_examples is None else args.max_train_examples
  dev = dev if args.max_dev_examples is None else args.max_dev_examples
  return train, dev or None


def budget_text(args) -> str:
  parts = []
  for task in args.tasks:
    train, dev = budget(args, task)
    parts.append(f"{task} at most {train:,} training sentences and "
                 + ("every dev sentence" if dev is None else f"{dev:,} dev sentences"))
  return "; ".join(parts)


def train_config(args, task: str, method: str, learning_rate: float, seed: int):
  from adapter_keras.config import AdapterConfig  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.config import TokenTrainConfig  # pylint: disable=import-outside-toplevel
  fields = dict(method="adapter", adapter=AdapterConfig.named("houlsby", size=args.adapter_size)) \
      if method == "adapter" else dict(method="full")
  return TokenTrainConfig(encoder=args.encoder, learning_rate=learning_rate, epochs=args.epochs,
                          batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH, seed=seed,
                          max_train_examples=budget(args, task)[0], **fields)


def cell_key(args, method: str) -> str:
  """A cell's run directory name: the adapter size is part of what its runs are."""
  return f"adapter-m{args.adapter_size}" if method == "adapter" else method


def run_dir(args, task: str, method: str, lr: float, seed: int) -> str:
  return os.path.join(args.runs_dir, task, cell_key(args, method), f"lr{lr_text(lr)}-seed{seed}")


def planned_runs(args, task: str, method: str, rates: Sequence[float]) -> List[Tuple[float, int]]:
  return run_grid.planned_runs(rates, args.seeds, args.lr_search,
                               lambda lr, seed: run_dir(args, task, method, lr, seed))


# ----------------------------------------------------------------------------- data


def load_task(args, name: str):
  """(TokenTask, train, dev (subsampled), test, test digest); one-line exit for a missing or bad file."""
  from adapter_keras.tasks.tagging import TokenTask, check_tags, label_set, read_conll  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import limit_examples  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.tagging import tagging_sha256  # pylint: disable=import-outside-toplevel
  folder = os.path.join(args.data_dir, name)
  try:
    train, dev, test = (read_conll(os.path.join(folder, f"{split}.conll"), split)
                        for split in ("train", "dev", "test"))
    labels = label_set(train)
    check_tags(dev, labels, "the dev set")
    check_tags(test, labels, "the test set")
  except (OSError, ValueError) as e:
    sys.exit(f"error: {name}: {e}")
  dev = limit_examples(dev, budget(args, name)[1], 0)  # one dev subsample for every run: selections compare
  return TokenTask(name, labels), train, dev, test, tagging_sha256(test, [])


def test_scores(path: str, digest: str) -> Optional[Dict]:
  """The run's stored test scores if they were made on these test sentences."""
  file = os.path.join(path, TEST_FILE)
  if not os.path.exists(file):
    return None
  stored = read_json_object(file, "a run's test scores")
  return stored if stored.get("test_sha256") == digest else None


# ----------------------------------------------------------------------------- runs


def train_cell(args, data, method: str, rates: Sequence[float], counts: Dict) -> None:
  """Every run of one cell on one task (finished ones with their test scores reused), each scored on test."""
  import tf_keras  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import train_token  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.tagging import score_sentences  # pylint: disable=import-outside-toplevel
  task, train, dev, test, digest = data
  done = set()
  while True:
    todo = [r for r in planned_runs(args, task.name, method, rates) if r not in done]
    if not todo:
      return
    for lr, seed in todo:
      done.add((lr, seed))
      out = run_dir(args, task.name, method, lr, seed)
      name = f"{task.name} {cell_key(args, method)} lr{lr_text(lr)} seed{seed}"
      metrics_file = os.path.join(out, "metrics.json")
      if os.path.exists(metrics_file) and test_scores(out, digest) is None:
        print(f"{LOG} {name}: finished without test scores on these test sentences; training it again", flush=True)
        os.remove(metrics_file)  # run_dir's rule: a finished run trains again once its metrics.json is gone
      try:
        result, model = train_token(task, train, dev, train_config(args, task.name, method, lr, seed), out_dir=out,
                                    verbose=False, save_model=False)
      except FileExistsError as e:
        sys.exit(f"error: {e} (the runs there were made with other settings: give another --runs-dir)")
      if model is None:
        counts["reused"] += 1
        stored = test_scores(out, digest)
      else:
        counts["trained"] += 1
        started = time.perf_counter()
        metrics = score_sentences(test, model.predict_tags(test))
        stored = dict(test_sha256=digest, sentences=len(test), metrics=metrics,
                      seconds=time.perf_counter() - started)
        write_json_atomic(os.path.join(out, TEST_FILE), stored)
      print(f"{LOG} {name}: dev f1 {result.score:.4f}, test f1 {stored['metrics']['f1']:.4f} "
            + ("(reused)" if model is None else f"({result.seconds:.0f} s + test {stored['seconds']:.0f} s)"),
            flush=True)
      del model
      tf_keras.backend.clear_session()  # each run builds its own model: a long benchmark does not slow down


# ----------------------------------------------------------------------------- results


def _mean_sem(values: Sequence[float]) -> Dict:
  from adapter_keras.tasks.metrics import standard_error  # pylint: disable=import-outside-toplevel
  return dict(mean=float(np.mean(values)), sem=standard_error(values) if len(values) > 1 else None, n=len(values))


def cell_summary(runs: List[Dict]) -> Dict:
  """run_grid.summarize's dev selection, plus the test scores of the best run and, at the best-mean learning
  rate (run_grid.best_mean_run), their mean +- s.e.m. over seeds."""
  summary = run_grid.summarize(runs)
  best = select_run(runs, "best-run")
  seeds = run_grid.setting_runs(runs, run_grid.best_mean_run(runs))
  summary["dev"] = dict(best_run=best["metrics"], mean=_mean_sem([r["score"] for r in seeds]))
  summary["test"] = dict(best_run=best["test"]["metrics"],
                         mean={m: _mean_sem([r["test"]["metrics"][m] for r in seeds]) for m in METRICS},
                         seeds=[r["config"]["seed"] for r in seeds])
  summary["trained_fraction"] = float(np.mean([r["trained_fraction"] for r in runs]))
  summary["best_epoch"] = best["best_epoch"]
  summary["test_seconds"] = sum(r["test"]["seconds"] for r in runs)
  return summary


def gather(args, rates: Dict, digests: Dict) -> Tuple[Dict, Dict]:
  """({task: {method: summary}}, {task: status}) from the finished runs with test scores on disk."""
  scores, status = {}, {}
  for task in args.tasks:
    done, seconds = 0, 0.0
    for method in args.methods:
      runs = []
      for lr, seed in planned_runs(args, task, method, rates[method]):
        path = run_dir(args, task, method, lr, seed)
        run = run_grid.finished_run(path)
        test = test_scores(path, digests[task]) if run is not None and digests.get(task) else None
        if test is not None:
          runs.append(dict(run, test=test))
      done += len(runs)
      seconds += sum(r["seconds"] + r["test"]["seconds"] for r in runs)
      if runs:
        scores.setdefault(task, {})[method] = cell_summary(runs)
    expected = sum(run_grid.runs_expected(len(rates[m]), args.seeds, args.lr_search) for m in args.methods)
    status[task] = dict(status=run_grid.status(done, expected), runs_finished=done, runs_planned=expected,
                        run_seconds=seconds)
  return scores, status


def _pct(summary: Dict) -> str:
  text = f"{100 * summary['mean']:.1f}"
  text += f" ± {100 * summary['sem']:.1f}" if summary["sem"] is not None else ""
  return text + (f" (n={summary['n']})" if summary["n"] < 2 else "")


def write_outputs(args, rates: Dict, digests: Dict, command: str, invocation_seconds: Dict) -> None:
  scores, status = gather(args, rates, digests)
  tasks_text = "; ".join(f"{t} {s['status']} ({s['runs_finished']}/{s['runs_planned']} runs, "
                         f"{s['run_seconds'] / 60:.0f} min of runs and test scoring)" for t, s in status.items())
  search = ("both learning rates with the first seed, the other seeds at the first seed's best learning rate"
            if args.lr_search == "first-seed" else "every learning rate with every seed")
  budget = (f"encoder {args.encoder}; {budget_text(args)} (training: a seeded subsample, drawn per seed; dev: one "
            f"seed-0 subsample for every run), dev scored after every epoch: it picks the epoch and the "
            f"learning rate (entity F1); test in full, scored once per run and never used to choose; "
            f"{args.epochs} epochs, batch {BATCH_SIZE}, max length {MAX_SEQ_LENGTH}, first sub-word labelled; "
            f"seeds {list(args.seeds)}; learning rates "
            + ", ".join(f"{m} {'/'.join(lr_text(lr) for lr in lrs)}" for m, lrs in rates.items())
            + f" ({search}); adapters: Houlsby, size {args.adapter_size}")
  for path in (args.out_json, args.out_md):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_json_atomic(args.out_json, dict(
      command=command, encoder=args.encoder, budget=budget, methods=list(args.methods),
      learning_rates={m: list(lrs) for m, lrs in rates.items()}, lr_search=args.lr_search,
      adapter_size=args.adapter_size, tasks=status, invocation_seconds=invocation_seconds, scores=scores,
      published={t: PUBLISHED.get(t) for t in args.tasks}, published_note=PUBLISHED_NOTE))
  header = ["task", "method", "trained params", "lr", "dev F1", "test F1", "test precision", "test recall",
            "test token acc", "best run: test F1 (lr, seed)", "runs", "run time (min)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for task in args.tasks:
    for method in args.methods:
      s = scores.get(task, {}).get(method)
      if s is None:
        lines.append("| " + " | ".join([task, cell_key(args, method)] + ["-"] * (len(header) - 2)) + " |")
        continue
      test = s["test"]["mean"]
      best = s["best_run"]
      lines.append("| " + " | ".join([
          task, cell_key(args, method), f"{s['trained_params']:,} ({100 * s['trained_fraction']:.2f}%)",
          lr_text(s["learning_rate"]), _pct(s["dev"]["mean"])] + [_pct(test[m]) for m in METRICS] + [
          f"{100 * s['test']['best_run']['f1']:.1f} ({lr_text(best['learning_rate'])}, {best['seed']})",
          str(s["runs"]), f"{(s['seconds'] + s['test_seconds']) / 60:.0f}"]) + " |")
  anchors = "".join(f"- {t}: {PUBLISHED[t]}.\n" for t in args.tasks if t in PUBLISHED)
  text = (
      f"# Token classification on {args.encoder}: adapters and full fine-tuning (measured)\n\n"
      f"Command: `{command}`\n\nBudget: {budget}.\n\nTasks: {tasks_text}.\n\n"
      "Scores x 100. Entity F1, precision and recall as conlleval counts them (seqeval's default mode), token "
      "accuracy over words. dev F1 and the test columns: mean ± s.e.m. over seeds at the learning rate (lr) "
      "whose dev F1 has the best mean among those trained with every seed; best run: the single run with the best "
      "dev F1 over learning rates x "
      "seeds (the paper's rule) and its test F1. Trained parameters: the runs' own count, the tagging head "
      "included. Run time: training, dev scoring and test scoring of the cell's runs.\n\n"
      + "\n".join(lines) + "\n\n"
      + (f"Published anchors ({PUBLISHED_NOTE}; cased BERT-base-class models on the full training sets, so an "
         f"upper reference for an uncased 6-layer MiniLM on a subsample):\n\n{anchors}" if anchors else ""))
  write_text_atomic(args.out_md, text)
  print(f"{LOG} wrote {args.out_json}, {args.out_md}; tasks: {tasks_text}", flush=True)


# ----------------------------------------------------------------------------- main


def plan_text(args, rates: Dict) -> str:
  lines = [f"encoder {args.encoder}; tasks {', '.join(args.tasks)} from {args.data_dir}; epochs {args.epochs}, "
           f"batch {BATCH_SIZE}, max length {MAX_SEQ_LENGTH}; {budget_text(args)}; "
           f"--lr-search {args.lr_search}; runs under {args.runs_dir}"]
  for task in args.tasks:
    for method in args.methods:
      planned = planned_runs(args, task, method, rates[method])
      expected = run_grid.runs_expected(len(rates[method]), args.seeds, args.lr_search)
      states = []
      for lr, seed in planned:
        finished = run_grid.finished_run(run_dir(args, task, method, lr, seed)) is not None
        states.append(f"lr{lr_text(lr)}-seed{seed} {'finished' if finished else 'to train'}")
      if len(planned) < expected:
        states.append(f"{expected - len(planned)} more seed(s) at the first seed's best learning rate")
      lines.append(f"{task} {cell_key(args, method)}: " + "; ".join(states))
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoder", default="minilm-l6", help="any encoder spec `train --encoder` takes")
  parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tagging"))
  parser.add_argument("--tasks", nargs="+", default=list(TASKS))
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
  parser.add_argument("--adapter-size", type=int, default=64)
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--max-train-examples", type=int,
                      help="training sentences of every task (default: each task's own, TASK_BUDGETS)")
  parser.add_argument("--max-dev-examples", type=int,
                      help="dev sentences of every task (a fixed seed-0 subsample, the same for every run); 0: all "
                           "(default: each task's own, TASK_BUDGETS)")
  parser.add_argument("--learning-rates", nargs="+", default=[], metavar="METHOD=LR[,LR...]",
                      help="a method's own learning rates instead of its defaults (module docstring)")
  parser.add_argument("--lr-search", choices=run_grid.LR_SEARCHES, default="first-seed",
                      help="first-seed: every learning rate with the first seed, the other seeds at its best "
                           "(default); grid: every learning rate with every seed")
  parser.add_argument("--runs-dir", default=os.path.join("runs", "token_classification"))
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "token_classification.json"))
  parser.add_argument("--out-md", default=os.path.join("docs", "results", "token_classification.md"))
  parser.add_argument("--plan", action="store_true", help="print the runs and their state, and exit")
  parser.add_argument("--report-only", action="store_true", help="train nothing: the outputs from the finished runs")
  args = parser.parse_args(argv)
  if (args.max_train_examples is not None and args.max_train_examples < 1) or args.epochs < 1 \
      or args.adapter_size < 1 or (args.max_dev_examples is not None and args.max_dev_examples < 0):
    parser.error("--max-train-examples, --epochs and --adapter-size must be >= 1, --max-dev-examples >= 0")
  args.methods = list(dict.fromkeys(args.methods))
  args.tasks = list(dict.fromkeys(args.tasks))
  try:
    rates = run_grid.parse_learning_rates(args.learning_rates, list(METHODS),
                                          {m: METHODS[m] for m in args.methods})
  except ValueError as e:
    sys.exit(f"error: {e}")
  rates = {m: rates[m] for m in args.methods}
  print(plan_text(args, rates), flush=True)
  if args.plan:
    return 0
  if not os.path.isdir(args.data_dir):
    sys.exit(f"error: tagging data dir {args.data_dir} not found")
  command = run_grid.benchmark_command(__file__, argv)
  invocation_seconds, digests, counts = {}, {}, dict(trained=0, reused=0)
  data = {}
  for task in args.tasks:  # every file read and checked before anything trains
    data[task] = load_task(args, task)
    digests[task] = data[task][4]
  for task in args.tasks:
    if not args.report_only:
      started = time.monotonic()
      for method in args.methods:
        train_cell(args, data[task], method, rates[method], counts)
      invocation_seconds[task] = time.monotonic() - started
      write_outputs(args, rates, digests, command, invocation_seconds)
  if args.report_only:
    write_outputs(args, rates, digests, command, invocation_seconds)
  else:
    print(f"{LOG} runs trained {counts['trained']}, reused {counts['reused']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
