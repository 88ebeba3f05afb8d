"""The field's tuning methods side by side on one base (MiniLM-L6), at matched trained-parameter budgets.

Methods (a cell is one method at one budget; `--methods` picks them):

  houlsby        two adapters per block (the paper's), size m           AdapterConfig.named("houlsby", size=m)
  pfeiffer       one adapter after the FFN (Pfeiffer et al. 2021)       AdapterConfig.named("pfeiffer", size=m)
  parallel       beside the FFN, output x 4 (He et al. 2022)            AdapterConfig.named("scaled-parallel", size=m)
  lora           query and value, rank r, alpha 8 (PEFT's default; the  method_config {"rank": r, "alpha": 8}
                 LoRA paper fixes alpha rather than tuning it, so the update is scaled by 8 / r)
  prefix-tuning  p key and p value vectors per layer, no MLP (P-tuning  method_config {"length": p}
                 v2's choice for classification)
  ia3            key, value and FFN scaling vectors (one fixed budget)
  bitfit         biases and LayerNorm offsets (one fixed budget)
  full           full fine-tuning (100%, the reference)

Budgets: for a method with a size knob (m, r, p) the knob whose trained-parameter count is closest to each
target (0.1%, 0.5%, 2% of the base's parameters, pooler included) is chosen from the method's exact
`trained_params` formula on the encoder's ModelShape, the task head EXCLUDED (it is the same d*C + C for every
method; the runs' own counts, which include it, are reported beside the scores). Two targets that land on one
knob give one cell; a target more than 2x from what the closest knob trains is not reachable and has no cell.
`--plan` prints the cells and exits.

Learning rates: two per method by default (`--learning-rates METHOD=LR,LR` overrides):
  adapters (all three) 3e-4, 3e-3   Houlsby et al. 2019 §3.2 swept {3e-5, 3e-4, 3e-3}; 3e-5 barely moves
                                    adapters in the ~100 steps of this budget
  lora                 5e-4, 2e-3   Hu et al. 2021 Table 9: 4e-4..5e-4 for RoBERTa-base over 30-80 epochs; 4x that
                                    for our few steps
  prefix-tuning        5e-3, 1e-2   Liu et al. 2022 (P-tuning v2): 5e-3..1e-2 on GLUE/SuperGLUE
  ia3                  3e-3, 1e-2   Liu et al. 2022 (T-Few): 3e-3; 1e-2 for our few steps
  bitfit               4e-4, 1e-3   Ben Zaken et al. 2022 §3: {1e-4, 4e-4, 7e-4, 1e-3}, the upper two
  full                 3e-5, 1e-4   Devlin et al. 2019: {2e-5, 3e-5, 5e-5}; small models such as MiniLM take up to 1e-4

Protocol (phase "scores"): per task (rte, mrpc, stsb, cola, sst2), cell, learning rate and seed, one run of
`train_task` (at most --max-train-examples training examples: a seeded subsample that differs by seed, dev in
full, --epochs epochs with the best epoch's dev score, batch 32, max length 128) under
RUNS_DIR/<task>/<method>-<knob><value>/lr<lr>-seed<seed>. `--lr-search first-seed` (default) trains every
learning rate with the first seed, then the other seeds only at the learning rate whose first-seed run scored
best (4 runs per cell instead of 6: the budget below); `--lr-search grid` trains the whole grid. Each cell
reports its best run (the highest dev score over learning rates x seeds, the paper's rule) and the mean +- s.e.m.
over seeds at the learning rate with the best mean among those trained with every seed (analysis/run_grid.py:
best_mean_run; under first-seed search the first seed's best). A run directory
holding the same finished run is reused (train/run_dir.py: the run identity), so an interrupted benchmark
resumes; after every task the results are written again (--out-json, --out-md, --figure), saying which tasks
are complete, partial or missing, so that each task can be committed as it finishes. Runs keep no artifact.

Phase "resources" (`--resources`, once per cell, on --resources-task's training sentences): trained
parameters (counted), training examples/s (the cells' passes alternated round by round, after a warm-up:
benchmarks/throughput.py's measuring functions), inference time over the plain base's at batch 1 and 32 (LoRA
and IA3 merged and unmerged), peak training memory (a fresh subprocess per cell: peak RSS over training steps
above the process's RSS before the model was built, as throughput.py measures it) and the artifact's size
(save_adapter). About 15 minutes for the 18 cells on MiniLM (2 cores); written to RUNS_DIR/resources.json
and read by every later report.

Budget: 18 cells x 4 runs per task at 1,000 examples and 3 epochs on 2 idle cores. Measured over all 72 runs:
SST-2 91 min, CoLA 44 min, RTE 134 min; MRPC about 90 s a run alone (its first 30 runs), so about 1 h 50 min;
STS-B 152 min, run two at a time beside MRPC (one thread each). About 8.5 hours in all. Run it one task per
sitting:

  python benchmarks/method_comparison.py --plan
  python benchmarks/method_comparison.py --tasks rte        # then mrpc, stsb, cola, sst2; commit after each
  python benchmarks/method_comparison.py --resources --report-only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from adapter_keras.analysis.common import pyplot  # noqa: E402
from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.analysis.run_grid import lr_text  # noqa: E402
from adapter_keras.config import AdapterConfig  # noqa: E402
from adapter_keras.io import read_json_object, write_json_atomic, write_text_atomic  # noqa: E402
from adapter_keras.methods import ModelShape, get_method, method_names  # noqa: E402
from adapter_keras.train.config import TrainConfig  # noqa: E402

LOG = "[method_comparison]"
TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
SEEDS = (0, 1, 2)
TARGETS = (0.001, 0.005, 0.02)
# A target the closest knob misses by more than this factor is not reachable by the method.
MAX_TARGET_MISS = 2.0
LORA_ALPHA = 8.0
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 128
THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """One method of the comparison: its registered method, its size knob (None: one fixed budget), how a
  knob value becomes TrainConfig fields, and its default learning rates."""

  name: str
  registered: str
  knob: Optional[str]
  learning_rates: Tuple[float, ...]

  def fields(self, value: Optional[int]) -> Dict:
    """TrainConfig's method fields for knob `value`."""
    if self.registered == "adapter":
      return dict(method="adapter", adapter=AdapterConfig.named(_PLACEMENTS[self.name], size=value))
    if self.name == "lora":
      return dict(method="lora", method_config={"rank": value, "alpha": LORA_ALPHA})
    if self.name == "prefix-tuning":
      return dict(method="prefix-tuning", method_config={"length": value})
    return dict(method=self.registered)


_PLACEMENTS = {"houlsby": "houlsby", "pfeiffer": "pfeiffer", "parallel": "scaled-parallel"}
METHODS = {spec.name: spec for spec in (
    MethodSpec("houlsby", "adapter", "m", (3e-4, 3e-3)),
    MethodSpec("pfeiffer", "adapter", "m", (3e-4, 3e-3)),
    MethodSpec("parallel", "adapter", "m", (3e-4, 3e-3)),
    MethodSpec("lora", "lora", "r", (5e-4, 2e-3)),
    MethodSpec("prefix-tuning", "prefix-tuning", "p", (5e-3, 1e-2)),
    MethodSpec("ia3", "ia3", None, (3e-3, 1e-2)),
    MethodSpec("bitfit", "bitfit", None, (4e-4, 1e-3)),
    MethodSpec("full", "full", None, (3e-5, 1e-4)),
)}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One method at one budget."""

  method: str
  target: Optional[float]  # None: the method's one fixed budget
  value: Optional[int]  # the knob's value
  trained_params: int  # the formula's, head excluded
  base_params: int

  @property
  def key(self) -> str:
    """Its run directories' name: the knob value identifies the runs (a target could move to another knob)."""
    spec = METHODS[self.method]
    return self.method if spec.knob is None else f"{self.method}-{spec.knob}{self.value}"

  @property
  def label(self) -> str:
    return self.method if self.target is None else f"{self.method}-{100 * self.target:g}%"

  @property
  def fraction(self) -> float:
    return self.trained_params / self.base_params

  def to_dict(self) -> Dict:
    spec = METHODS[self.method]
    return dict(key=self.key, label=self.label, method=self.method, knob=spec.knob, value=self.value,
                target=self.target, trained_params_without_head=self.trained_params, base_params=self.base_params,
                trained_percent=100 * self.fraction)


def train_config(args, cell: Cell, learning_rate: float, seed: int) -> TrainConfig:
  return TrainConfig(encoder=args.encoder, learning_rate=learning_rate, epochs=args.epochs, batch_size=BATCH_SIZE,
                     max_seq_length=MAX_SEQ_LENGTH, seed=seed, max_train_examples=args.max_train_examples,
                     **METHODS[cell.method].fields(cell.value))


# ----------------------------------------------------------------------------- plan


def check_methods(names: Sequence[str]) -> None:
  """Exits with one line when a requested method is not registered in this adapter_keras."""
  registered = set(method_names())
  missing = [n for n in names if METHODS[n].registered not in registered]
  if missing:
    sys.exit(f"error: method {', '.join(METHODS[n].registered for n in missing)} is not registered in this "
             f"adapter_keras (registered: {', '.join(sorted(registered))}); leave it out of --methods")


def encoder_shape(encoder: str) -> ModelShape:
  """The encoder's ModelShape with no head (the budgets are matched head excluded), its pooling its default."""
  from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
  pretrained = load_encoder(encoder)
  return ModelShape.of(pretrained.config, head_params=0, head_reads_pooler=pretrained.default_pooling == "cls")


def formula_params(spec: MethodSpec, shape: ModelShape, value: Optional[int]) -> int:
  """The method's exact trained-parameter count at knob `value` (its `trained_params`)."""
  fields = spec.fields(value)
  config = TrainConfig(**fields).method_settings()
  return get_method(fields["method"]).trained_params(shape, config)


def closest_knob(spec: MethodSpec, shape: ModelShape, target_params: float) -> int:
  """The knob value whose trained parameters are closest to `target_params` (counts grow with the knob:
  the first value at or above the target, or the one before it)."""
  value, limit = 1, 1 << 20
  while formula_params(spec, shape, value) < target_params and value < limit:
    value += 1
  if value > 1 and (target_params - formula_params(spec, shape, value - 1)
                    <= formula_params(spec, shape, value) - target_params):
    return value - 1
  return value


def plan_cells(methods: Sequence[str], shape: ModelShape, targets: Sequence[float] = TARGETS
               ) -> Tuple[List[Cell], List[str]]:
  """(the cells, notes on targets without a cell)."""
  base = shape.base_params
  cells, notes = [], []
  for name in methods:
    spec = METHODS[name]
    if spec.knob is None:
      cells.append(Cell(name, None, None, formula_params(spec, shape, None), base))
      continue
    chosen = {}
    for target in targets:
      value = closest_knob(spec, shape, target * base)
      params = formula_params(spec, shape, value)
      miss = max(params / (target * base), (target * base) / params)
      if miss > MAX_TARGET_MISS:
        notes.append(f"{name} {100 * target:g}%: not reachable (the closest, {spec.knob} = {value}, trains "
                     f"{100 * params / base:.3f}%)")
      elif value in chosen:
        notes.append(f"{name} {100 * target:g}%: the same knob as {chosen[value].label} ({spec.knob} = {value})")
      else:
        chosen[value] = Cell(name, target, value, params, base)
    cells.extend(chosen.values())
  return cells, notes


def plan_text(cells: Sequence[Cell], notes: Sequence[str], shape: ModelShape) -> str:
  lines = [f"base: {shape.base_params:,} parameters (pooler included); trained parameters from each method's "
           "formula, the task head excluded",
           f"{'cell':<22}{'knob':>10}{'trained params':>16}{'% of base':>11}"]
  for cell in cells:
    knob = "-" if cell.value is None else f"{METHODS[cell.method].knob} = {cell.value}"
    lines.append(f"{cell.label:<22}{knob:>10}{cell.trained_params:>16,}{100 * cell.fraction:>10.3f}%")
  return "\n".join(lines + [f"note: {n}" for n in notes])


# ----------------------------------------------------------------------------- scores


def learning_rates(args) -> Dict[str, Tuple[float, ...]]:
  """Each requested method's grid: its defaults, or --learning-rates METHOD=LR[,LR...]."""
  try:
    return run_grid.parse_learning_rates(args.learning_rates, list(METHODS),
                                         {name: METHODS[name].learning_rates for name in args.methods})
  except ValueError as e:
    sys.exit(f"error: {e}")


def run_dir(args, task: str, cell: Cell, lr: float, seed: int) -> str:
  return os.path.join(args.runs_dir, task, cell.key, f"lr{lr_text(lr)}-seed{seed}")


def planned_runs(args, task: str, cell: Cell, rates: Sequence[float]) -> List[Tuple[float, int]]:
  """The (learning rate, seed) runs of one cell on one task, as far as they are known (run_grid.planned_runs)."""
  return run_grid.planned_runs(rates, args.seeds, args.lr_search,
                               lambda lr, seed: run_dir(args, task, cell, lr, seed))


def train_cell(args, task, train, dev, cell: Cell, rates: Sequence[float], counts: Dict) -> None:
  """Every run of one cell on one task (finished ones reused)."""
  import tf_keras  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import train_task  # pylint: disable=import-outside-toplevel
  done = set()
  while True:
    todo = [r for r in planned_runs(args, task.name, cell, rates) if r not in done]
    if not todo:
      return
    for lr, seed in todo:
      done.add((lr, seed))
      out = run_dir(args, task.name, cell, lr, seed)
      name = f"{task.name} {cell.label} lr{lr_text(lr)} seed{seed}"
      try:
        result, model = train_task(task, train, dev, train_config(args, cell, lr, seed), out_dir=out,
                                   verbose=False, save_model=False)
      except FileExistsError as e:
        sys.exit(f"error: {e} (the runs there were made with other settings: give another --runs-dir)")
      reused = model is None
      counts["reused" if reused else "trained"] += 1
      print(f"{LOG} {name}: {task.primary_metric} {result.score:.4f} "
            + ("(reused)" if reused else f"({result.seconds:.0f} s)"), flush=True)
      # Each run builds its own model: drop the previous one's graph state so a long sweep does not slow down.
      del model
      tf_keras.backend.clear_session()


cell_summary = run_grid.summarize  # a cell on one task: its best run and the mean +- s.e.m. at the best-mean lr


def runs_per_cell(args, rates: Sequence[float]) -> int:
  """How many runs a cell has once its task is complete."""
  return run_grid.runs_expected(len(rates), args.seeds, args.lr_search)


def gather(args, cells: Sequence[Cell], rates: Dict) -> Tuple[Dict, Dict]:
  """({task: {cell key: summary}}, {task: status}) from the finished runs on disk."""
  scores, status = {}, {}
  for task in args.tasks:
    done, seconds = 0, 0.0
    for cell in cells:
      runs = [r for r in (run_grid.finished_run(run_dir(args, task, cell, lr, seed))
                          for lr, seed in planned_runs(args, task, cell, rates[cell.method])) if r is not None]
      done += len(runs)
      seconds += sum(r["seconds"] for r in runs)
      if runs:
        scores.setdefault(task, {})[cell.key] = cell_summary(runs)
    expected = sum(runs_per_cell(args, rates[c.method]) for c in cells)
    status[task] = dict(status=run_grid.status(done, expected), runs_finished=done, runs_planned=expected,
                        run_seconds=seconds)
  return scores, status


def mean_over_tasks(scores: Dict, cells: Sequence[Cell]) -> Dict:
  """Per cell: the mean over tasks of its seed means (and trained parameters), over the tasks it has."""
  means = {}
  for cell in cells:
    per_task = [s[cell.key] for s in scores.values() if cell.key in s]
    if per_task:
      means[cell.key] = dict(mean=float(np.mean([p["mean"] for p in per_task])),
                             best_run=float(np.mean([p["best_run"]["score"] for p in per_task])),
                             trained_params=float(np.mean([p["trained_params"] for p in per_task])),
                             tasks=len(per_task))
  return means


# ----------------------------------------------------------------------------- resources


def _throughput():
  """benchmarks/throughput.py: its measuring functions (fit_step, warm-up batches, alternating rounds, RSS)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  if "throughput" not in sys.modules:
    spec = importlib.util.spec_from_file_location("throughput", THROUGHPUT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
  return sys.modules["throughput"]


def resources_examples(args):
  """(task, the encoded first-seed subsample of --resources-task's training set), tokenized like the runs."""
  from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained import encoder_vocabulary  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.sources import DataSource, load_task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples, limit_examples  # pylint: disable=import-outside-toplevel
  task, train, _ = load_task_data(DataSource(task=args.resources_task, data_dir=args.data_dir), need_dev=False)
  _, vocab_file, lower_case = encoder_vocabulary(args.encoder)
  preprocessor = BertPreprocessor(vocab_file, lower_case, MAX_SEQ_LENGTH)
  return task, encode_examples(preprocessor, limit_examples(train, args.resources_examples, 0))


def _batches(encoded, batch_size: int, shuffle: bool):
  from adapter_keras.train.inputs import make_dataset  # pylint: disable=import-outside-toplevel
  return list(make_dataset(encoded, batch_size, shuffle=shuffle, seed=0, bucket_by_length=shuffle))


def _training_model(config: TrainConfig, task):
  """The run's model (train/run.py: build_trainable_model), compiled as `fit` compiles it."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.classification import compile_task_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.optim import create_optimizer  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import build_trainable_model  # pylint: disable=import-outside-toplevel
  model = build_trainable_model(config, task, tf.distribute.get_strategy())
  return compile_task_model(model, create_optimizer(config.learning_rate, 10_000))


def memory_probe(config: TrainConfig, args) -> Dict:
  """Runs in a fresh process: peak RSS over training steps on the largest batches, above the RSS before the
  model was built (benchmarks/throughput.py's measure: weights, optimizer state, activations)."""
  tp = _throughput()
  task, encoded = resources_examples(args)
  batches = sorted(_batches(encoded, BATCH_SIZE, shuffle=True), key=lambda b: int(np.prod(b[0]["input_mask"].shape)))
  baseline = tp.rss_bytes("VmRSS")
  step = tp.fit_step(_training_model(config, task))
  for x, y in tp.warmup_batches(batches, False):
    step(x, y)  # traced, and the optimizer's slots made, before the peak is reset
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
  for x, y in batches[-3:]:
    step(x, y)
  return dict(peak_bytes=tp.rss_bytes("VmHWM") - baseline)


def _memory(args, configs: Dict[str, TrainConfig]) -> Dict[str, int]:
  """Peak training memory per cell, each in its own process, two at a time (each process's RSS is its own)."""
  peaks, running, pending = {}, {}, list(configs.items())
  while pending or running:
    while pending and len(running) < 2:
      key, config = pending.pop(0)
      command = [sys.executable, os.path.abspath(__file__), "--memory-probe", json.dumps(config.to_dict()),
                 "--encoder", args.encoder, "--data-dir", args.data_dir, "--resources-task", args.resources_task,
                 "--resources-examples", str(args.resources_examples)]
      running[key] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    key = next(iter(running))
    out, err = running.pop(key).communicate()
    if not out.strip():
      raise RuntimeError(f"memory probe of {key} failed:\n{err[-2000:]}")
    peaks[key] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]
    print(f"{LOG} resources {key}: peak training memory {peaks[key] / 2**20:.0f} MiB", flush=True)
  return peaks


def measure_resources(args, cells: Sequence[Cell]) -> Dict:
  """Trained parameters, training examples/s, inference time over the plain base, peak memory, artifact size."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from adapter_keras.methods import parameter_report  # pylint: disable=import-outside-toplevel
  tp = _throughput()
  started = time.perf_counter()
  task, encoded = resources_examples(args)
  configs = {c.key: train_config(args, c, METHODS[c.method].learning_rates[0], 0) for c in cells}
  models, steps, result = {}, {}, {}
  train_batches = [b for b in _batches(encoded, BATCH_SIZE, shuffle=True) if b[1].shape[0] == BATCH_SIZE] \
      or _batches(encoded, BATCH_SIZE, shuffle=True)
  examples = sum(int(b[1].shape[0]) for b in train_batches)
  for cell in cells:
    model = models[cell.key] = _training_model(configs[cell.key], task)
    steps[cell.key] = tp.fit_step(model)
    with tempfile.TemporaryDirectory() as tmp:
      artifact = model.save_adapter(os.path.join(tmp, "artifact"))
      size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(artifact) for f in files)
    result[cell.key] = dict(trained_params=parameter_report(model).trained_params, artifact_bytes=size)
    tp.run_pass(steps[cell.key], tp.warmup_batches(train_batches, False))
  print(f"{LOG} resources: {len(cells)} models built and warmed up; timing {examples} training examples per pass",
        flush=True)
  times = tp.alternating_rounds(
      {key: (lambda s=step: tp.run_pass(s, train_batches)) for key, step in steps.items()},
      args.resources_rounds)
  for key, seconds in times.items():
    result[key]["train_examples_per_s"] = examples / float(np.median(seconds))

  # Inference: each model called as `predict` calls it, against the plain base (full's model, nothing added).
  spec = tf.TensorSpec([None, None], tf.int32)
  signature = [dict(input_word_ids=spec, input_mask=spec, input_type_ids=spec)]

  def infer(model):
    fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
    return lambda x, y: fn(x).numpy()

  plain = _training_model(train_config(args, Cell("full", None, None, 0, 1), METHODS["full"].learning_rates[0], 0),
                          task)
  variants = {"plain": infer(plain)}
  for cell in cells:
    variants[cell.key] = infer(models[cell.key])
    method = get_method(configs[cell.key].method)
    if method.can_merge:  # a merged copy: the update folded into the base's kernels
      merged = _training_model(configs[cell.key], task)
      method.merge(merged, configs[cell.key].method_settings())
      variants[cell.key + " (merged)"] = infer(merged)
  for label, batch_size, count in (("bs1", 1, args.resources_examples // 4), ("bs32", 32, None)):
    batches = _batches(encoded, batch_size, shuffle=False)[:count]
    for fn in variants.values():
      tp.run_pass(fn, batches[:2])
    times = tp.alternating_rounds(
        {name: (lambda fn=fn: tp.run_pass(fn, batches)) for name, fn in variants.items()},
        args.resources_rounds)
    for name, seconds in times.items():
      if name == "plain":
        continue
      key, merged = (name[:-len(" (merged)")], True) if name.endswith(" (merged)") else (name, False)
      ratio = tp.median_ratio(seconds, times["plain"])
      result[key][f"infer_over_base_{label}" + ("_merged" if merged else "")] = ratio
  del models, steps, variants, plain
  for key, peak in _memory(args, configs).items():
    result[key]["peak_train_memory_bytes"] = peak
  return dict(cells=result, task=task.name, examples=int(len(encoded)), rounds=args.resources_rounds,
              seconds=time.perf_counter() - started, device=f"CPU ({os.cpu_count()} cores)",
              note=(f"trained parameters counted on the {task.name} model (head included); training examples/s: "
                    f"the median of {args.resources_rounds} passes over {examples} examples in length-grouped "
                    f"batches of {BATCH_SIZE}, the cells alternated round by round; inference: a model's time "
                    "over the plain base's (no method) on the same batches (batch 1 and 32), median ratio over "
                    "alternated rounds; LoRA and IA3 also merged; peak training memory: a fresh process per "
                    "cell, peak RSS over 3 training steps on the largest batches above its RSS before the model "
                    "was built; artifact: save_adapter's files"))


# ----------------------------------------------------------------------------- outputs


_STYLE = {"houlsby": ("tab:orange", "o"), "pfeiffer": ("tab:red", "v"), "parallel": ("tab:brown", "^"),
          "lora": ("tab:blue", "s"), "prefix-tuning": ("tab:purple", "P"), "ia3": ("tab:green", "D"),
          "bitfit": ("tab:olive", "X"), "full": ("black", "*")}


def plot(scores: Dict, means: Dict, cells: Sequence[Cell], path: str) -> None:
  """Score against trained parameters (log x), one line per method: a panel per task and the mean over tasks."""
  plt = pyplot()
  panels = [(task, scores[task]) for task in scores] + [("mean over tasks", means)]
  cols = min(3, len(panels))
  rows = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
  for ax, (title, cell_scores) in zip(axes.flat, panels):
    for method in dict.fromkeys(c.method for c in cells):
      points = sorted((cell_scores[c.key]["trained_params"], 100 * cell_scores[c.key]["mean"],
                       100 * (cell_scores[c.key].get("sem") or 0.0))
                      for c in cells if c.method == method and c.key in cell_scores)
      if points:
        x, y, err = zip(*points)
        color, marker = _STYLE[method]
        ax.errorbar(x, y, yerr=err, marker=marker, color=color, label=method, capsize=2, markersize=5)
        if method == "full":  # the reference every budget is read against (the paper's Fig. 3 baseline)
          ax.axhline(y[0], color=color, linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("trained parameters", fontsize=8)
    ax.set_ylabel("dev score (mean over seeds)", fontsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _score_cell(summary: Optional[Dict]) -> str:
  if summary is None:
    return "-"
  text = f"{100 * summary['mean']:.1f}"
  text += f" ± {100 * summary['sem']:.1f}" if summary["sem"] is not None else ""
  return text + f" ({100 * summary['best_run']['score']:.1f})"


def _resource_cells(resources: Optional[Dict], key: str) -> List[str]:
  r = (resources or {}).get("cells", {}).get(key)
  if r is None:
    return ["-"] * 5

  def ratio(name):
    merged = r.get(f"{name}_merged")
    return f"{r[name]:.2f}" + (f" / {merged:.2f}" if merged is not None else "")

  return [f"{r['train_examples_per_s']:.1f}", ratio("infer_over_base_bs1"), ratio("infer_over_base_bs32"),
          f"{r['peak_train_memory_bytes'] / 2**20:.0f}", f"{r['artifact_bytes'] / 1024:,.0f}"]


def write_outputs(args, cells, notes, rates, command: str, invocation_seconds: Dict) -> None:
  scores, status = gather(args, cells, rates)
  means = mean_over_tasks(scores, cells)
  resources_path = os.path.join(args.runs_dir, "resources.json")
  resources = read_json_object(resources_path, "the resources phase's results") \
      if os.path.exists(resources_path) else None
  tasks_text = "; ".join(f"{t} {s['status']} ({s['runs_finished']}/{s['runs_planned']} runs, "
                         f"{s['run_seconds'] / 60:.0f} min of runs)" for t, s in status.items())
  search = ("every learning rate with the first seed, the other seeds at the first seed's best learning rate"
            if args.lr_search == "first-seed" else "the whole grid of learning rates x seeds")
  budget = (f"tasks {', '.join(args.tasks)}; at most {args.max_train_examples:,} training examples per task (a "
            f"seeded subsample, drawn per seed), dev sets in full; {args.epochs} epochs (the best epoch's dev "
            f"score); batch {BATCH_SIZE}, max length {MAX_SEQ_LENGTH}; seeds {list(args.seeds)}; learning rates "
            + ", ".join(f"{m} {'/'.join(lr_text(lr) for lr in lrs)}" for m, lrs in rates.items())
            + f" ({search}); LoRA on query and value with alpha {LORA_ALPHA:g}; prefix tuning without its MLP")
  for path in (args.out_json, args.out_md):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_json_atomic(args.out_json, dict(
      command=command, encoder=args.encoder, budget=budget, targets=[t / 100 for t in args.targets],
      cells=[c.to_dict() for c in cells], plan_notes=list(notes),
      learning_rates={m: list(lrs) for m, lrs in rates.items()}, lr_search=args.lr_search,
      tasks=status, invocation_seconds=invocation_seconds, scores=scores, mean_over_tasks=means,
      resources=resources))
  header = (["cell", "knob", "trained params", "% of base"] + list(args.tasks) + ["mean"]
            + ["train ex/s", "infer x base bs1", "infer x base bs32", "peak train MiB", "artifact KiB"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for cell in cells:
    knob = "-" if cell.value is None else f"{METHODS[cell.method].knob} = {cell.value}"
    mean = means.get(cell.key)
    mean_text = "-" if mean is None else f"{100 * mean['mean']:.1f}" + (
        f" ({mean['tasks']} tasks)" if mean["tasks"] < len(args.tasks) else "")
    lines.append("| " + " | ".join(
        [cell.label, knob, f"{cell.trained_params:,}", f"{100 * cell.fraction:.3f}%"]
        + [_score_cell(scores.get(t, {}).get(cell.key)) for t in args.tasks] + [mean_text]
        + _resource_cells(resources, cell.key)) + " |")
  figure = os.path.relpath(args.figure, os.path.dirname(os.path.abspath(args.out_md)) or ".")
  if scores:
    plot(scores, means, cells, args.figure)
  text = (
      f"# Tuning methods side by side on {args.encoder} (measured)\n\n"
      f"Command: `{command}`\n\nBudget: {budget}.\n\nTasks: {tasks_text}.\n\n"
      "Each task cell: the mean ± s.e.m. over seeds (primary dev metric x 100) at the learning rate with the "
      "best mean among those trained with every seed, and in parentheses the best single run over learning rates "
      "x seeds (the paper's rule). "
      "Trained parameters: each method's formula, the task head excluded (the runs' counts, head included, are "
      "in the JSON). Inference: time over the plain base's, LoRA and IA3 as unmerged / merged.\n\n"
      + "\n".join(lines) + "\n\n"
      + (f"Resources ({resources['task']}, {resources['examples']} examples): {resources['note']}.\n\n"
         if resources else "Resources: not measured yet (`--resources`).\n\n")
      + "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")
      + (f"![score against trained parameters]({figure})\n" if scores else ""))
  write_text_atomic(args.out_md, text)
  print(f"{LOG} wrote {args.out_json}, {args.out_md}" + (f", {args.figure}" if scores else "")
        + f"; tasks: {tasks_text}", flush=True)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoder", default="minilm-l6", help="any encoder spec `train --encoder` takes")
  parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "glue"))
  parser.add_argument("--tasks", nargs="+", default=list(TASKS))
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
  parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--max-train-examples", type=int, default=1000)
  parser.add_argument("--learning-rates", nargs="+", default=[], metavar="METHOD=LR[,LR...]",
                      help="a method's own learning rates instead of its defaults (module docstring)")
  parser.add_argument("--lr-search", choices=("first-seed", "grid"), default="first-seed",
                      help="first-seed: every learning rate with the first seed, the other seeds at its best "
                           "(default); grid: every learning rate with every seed")
  parser.add_argument("--runs-dir", default=os.path.join("runs", "method_comparison"))
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "method_comparison.json"))
  parser.add_argument("--out-md", default=os.path.join("docs", "results", "method_comparison.md"))
  parser.add_argument("--figure", default=os.path.join("docs", "figures", "method_comparison.png"))
  parser.add_argument("--targets", type=float, nargs="+", default=[100 * t for t in TARGETS], metavar="PERCENT",
                      help="the trained-parameter budgets, in %% of the base (default 0.1 0.5 2)")
  parser.add_argument("--plan", action="store_true", help="print the cells (knobs, trained parameters) and exit")
  parser.add_argument("--report-only", action="store_true", help="train nothing: the outputs from the finished runs")
  parser.add_argument("--resources", action="store_true",
                      help="measure the cells' resources (RUNS_DIR/resources.json) before the scores")
  parser.add_argument("--resources-task", default="sst2")
  parser.add_argument("--resources-examples", type=int, default=128)
  parser.add_argument("--resources-rounds", type=int, default=3)
  parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # a TrainConfig as JSON: one cell's probe
  args = parser.parse_args(argv)
  if args.memory_probe:
    print(json.dumps(memory_probe(TrainConfig.from_dict(json.loads(args.memory_probe)), args)))
    return 0
  if args.max_train_examples < 1 or args.epochs < 1:
    parser.error("--max-train-examples and --epochs must be >= 1")
  args.methods = list(dict.fromkeys(args.methods))
  from adapter_keras.tasks import get_task  # pylint: disable=import-outside-toplevel
  try:
    args.tasks = list(dict.fromkeys(get_task(t).name for t in args.tasks))
  except (KeyError, ValueError) as e:
    sys.exit(f"error: --tasks: {e}")
  check_methods(args.methods)
  rates = learning_rates(args)
  shape = encoder_shape(args.encoder)
  cells, notes = plan_cells(args.methods, shape, [t / 100 for t in args.targets])
  print(plan_text(cells, notes, shape), flush=True)
  if args.plan:
    return 0
  if not os.path.isdir(args.data_dir):
    sys.exit(f"error: GLUE data dir {args.data_dir} not found")
  command = run_grid.benchmark_command(__file__, argv)
  invocation_seconds = {}
  if args.resources:
    resources = measure_resources(args, cells)
    os.makedirs(args.runs_dir, exist_ok=True)
    write_json_atomic(os.path.join(args.runs_dir, "resources.json"), resources)
  if args.report_only:
    write_outputs(args, cells, notes, rates, command, invocation_seconds)
    return 0
  from adapter_keras.tasks.sources import DataSource, load_task_data  # pylint: disable=import-outside-toplevel
  counts = dict(trained=0, reused=0)
  for task_name in args.tasks:
    started = time.monotonic()
    task, train, dev = load_task_data(DataSource(task=task_name, data_dir=args.data_dir))
    for cell in cells:
      train_cell(args, task, train, dev, cell, rates[cell.method], counts)
    invocation_seconds[task.name] = time.monotonic() - started
    write_outputs(args, cells, notes, rates, command, invocation_seconds)
  print(f"{LOG} runs trained {counts['trained']}, reused {counts['reused']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
