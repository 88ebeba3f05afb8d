"""Every command-line flag shared by more than one command, and the TF-free constants they need.

The `adapter-keras` and `automl-baseline` commands build their parsers from
these groups, so one flag means the same thing everywhere and a config
field cannot lose its flag:

* value types (`positive_int`, `positive_float`, `learning_rate`);
* the adapter flags, one per `AdapterConfig` field (`--adapter-<field>`);
* the "model and training" and "speed" flags of a training run, read back
  into `TrainConfig` keyword arguments;
* `--checkpoint-every`;
* the data-source flags (`--task/--data-dir`, `--tfds-data-dir`,
  `--train/--dev` files with their column flags).

Defaults come from the configs themselves (AdapterConfig, TrainConfig) and
choices from the registries (methods.METHOD_NAMES, train.config), which
import no TensorFlow, so `--help` and bad flags stay fast. The few constants
below that mirror a TensorFlow-importing module are copies;
tests/test_cli_flags.py checks that each equals the library's.
"""
from __future__ import annotations

import argparse
import json
import dataclasses
import math
from typing import Any, Dict, Optional

from adapter_keras.methods.adapter.config import (ACTIVATIONS, INTERACTIONS, NAMED_PLACEMENTS, NORMS, PLACEMENTS,
                                                  POSITIONS, AdapterConfig)
from adapter_keras.methods import method_names
from adapter_keras.train.config import (MAX_LEARNING_RATE, MAX_STATIC_LENGTHS, MIXED_PRECISION_CHOICES, STRATEGIES,
                                        TrainConfig)

# Copies of TensorFlow-importing modules' constants (tested equal).
POOLINGS = ("cls", "mean")  # layers.pooling.POOLINGS
DEFAULT_CHECKPOINT_EVERY = 200  # train.loop.DEFAULT_CHECKPOINT_EVERY_STEPS
SWEEP_PRESETS = ("paper-glue", "paper-extra", "paper-variable-ft")  # tuple(train.sweep.PRESETS)
ARCHITECTURES = ("bert-base", "bert-large", "minilm-l6")  # tuple(encoder.ARCHITECTURES)
# What --encoder takes (pretrained.load_encoder); README "How weights are loaded" has an example of each.
ENCODER_HELP = ("a name (minilm-l6), a TF Hub / Kaggle Models handle (https://...), or a directory: TF Hub "
                "SavedModel, Google's bert_model.ckpt, Hugging Face or Model Garden")
# TrainConfig fields that are plain flags of the same name (dashes for underscores).
_PLAIN_TRAIN_FIELDS = ("encoder", "method", "top_k", "learning_rate", "epochs", "seed", "batch_size",
                       "max_seq_length", "max_train_examples", "pooling", "strategy", "tpu", "static_shapes",
                       "steps_per_execution", "jit_compile", "mixed_precision", "prefix_cache", "method_config",
                       "static_lengths", "worker_timeout")


# ---------------------------------------------------------------- value types


def _positive(convert, what: str):
  def parse(text: str):
    try:
      value = convert(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
    if not 0 < value < math.inf:  # also refuses NaN; no flag means anything by an infinite value
      raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}"
                                       + (" (not finite)" if value == math.inf else ""))
    return value
  parse.__name__ = f"positive_{convert.__name__}"
  return parse


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


def learning_rate(text: str) -> float:
  """A learning rate: positive, finite and at most MAX_LEARNING_RATE (TrainConfig's own rule)."""
  value = positive_float(text)
  if value > MAX_LEARNING_RATE:
    raise argparse.ArgumentTypeError(f"expected a learning rate in (0, {MAX_LEARNING_RATE:g}], got {text!r}")
  return value


def _norm_choice(text: str) -> Optional[str]:
  if text == "none":
    return None
  if text not in NORMS:
    raise argparse.ArgumentTypeError(f"expected none, layer or batch, got {text!r}")
  return text


def _layer_index(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = -1
  if value < 0:
    raise argparse.ArgumentTypeError(f"expected a layer index >= 0, got {text!r}")
  return value


# ---------------------------------------------------------------- adapters


def add_adapter_arguments(parser: Any, with_size: bool = True) -> None:
  """Adds a flag `--adapter-<field>` per AdapterConfig field to `parser` (a parser or group).

  Defaults are AdapterConfig's. `with_size=False` leaves out --adapter-size
  for commands that take a list of sizes instead.
  """
  defaults = AdapterConfig()
  if with_size:
    parser.add_argument("--adapter-size", type=positive_int, default=defaults.size,
                        help="bottleneck width m")
  parser.add_argument("--adapter-init-std", type=positive_float, default=defaults.init_std,
                      help="std of the adapters' truncated-normal initialisation")
  parser.add_argument("--adapter-layers", type=_layer_index, nargs="+", default=defaults.layers,
                      metavar="LAYER", help="Transformer layers (0-based) that get adapters (default: all)")
  parser.add_argument("--adapter-activation", default=defaults.activation, choices=ACTIVATIONS)
  parser.add_argument("--adapter-positions", choices=POSITIONS,
                      help=f"adapters after attention, after the FFN, or both (default {defaults.positions}; a "
                           "named --adapter-placement sets it)")
  parser.add_argument("--adapter-norm", type=_norm_choice, default=defaults.norm,
                      metavar="{none,layer,batch}", help="norm on the adapter's input (default none)")
  parser.add_argument("--adapter-hidden-layers", type=positive_int, default=defaults.hidden_layers,
                      help="hidden layers of width m per adapter")
  parser.add_argument("--adapter-placement", default=defaults.placement, choices=PLACEMENTS + tuple(NAMED_PLACEMENTS),
                      help="sequential (the adapter transforms the sub-layer's output: Houlsby) or parallel (it "
                           "reads the sub-layer's input, beside it); or a named placement: houlsby, pfeiffer (one "
                           "adapter after the FFN, Pfeiffer et al. 2021), scaled-parallel (one parallel adapter "
                           "beside the FFN, output x4, He et al. 2022)")
  parser.add_argument("--adapter-interaction", default=defaults.interaction, choices=INTERACTIONS)
  parser.add_argument("--adapter-scale", type=positive_float,
                      help=f"factor s on the adapter's output, h + s f(x) (default {defaults.scale}; "
                           "scaled-parallel sets 4)")


def adapter_config_from_args(args: argparse.Namespace, size: Optional[Any] = None) -> AdapterConfig:
  """The AdapterConfig that `add_adapter_arguments`' flags describe: field f from `args.adapter_<f>`.

  `size` overrides --adapter-size (for commands that loop over sizes).
  """
  values = {}
  for field in dataclasses.fields(AdapterConfig):
    if field.name == "size" and size is not None:
      values["size"] = size
      continue
    value = getattr(args, f"adapter_{field.name}")
    if value is not None or field.default is None:  # None: a flag left unset, whose default a named placement sets
      values[field.name] = tuple(value) if isinstance(value, list) else value
  if values["placement"] in NAMED_PLACEMENTS:
    try:
      return AdapterConfig.named(values.pop("placement"), **values)
    except ValueError as e:
      raise ValueError(f"--adapter-placement: {e}") from None
  return AdapterConfig(**values)


# ---------------------------------------------------------------- training runs


def add_training_arguments(parser: argparse.ArgumentParser, *, methods: bool = True,
                           single_run: bool = True, adapter_size: bool = True,
                           max_seq_length: Optional[int] = TrainConfig.max_seq_length, pooling: bool = True,
                           prefix_cache: bool = True) -> None:
  """Adds the "model and training" flags and the "distribution and speed" flags of a training run.

  Args:
    methods: --method and --top-k (off for commands that only train adapters).
    single_run: --learning-rate, --epochs and --seed (a sweep takes lists).
    adapter_size: --adapter-size (off for commands that loop over sizes).
    max_seq_length: the default of --max-seq-length; None leaves the flag to
      the command (train-squad documents it with its windows).
    pooling, prefix_cache: --pooling; --frozen-bottom-cache and --frozen-bottom-cache-dir.
  """
  defaults = TrainConfig()
  g = parser.add_argument_group("model and training")
  g.add_argument("--encoder", default=defaults.encoder, help="the pre-trained encoder: " + ENCODER_HELP)
  if methods:
    g.add_argument("--method", default=defaults.method, choices=method_names(),
                   help="the tuning method: built in, or a plugin installed in the adapter_keras.methods entry "
                        "point group (methods/registry.py)")
    g.add_argument("--top-k", type=positive_int, help="layers to fine-tune with --method top-k")
    add_method_config_argument(g)
  add_adapter_arguments(g, with_size=adapter_size)
  if pooling:
    g.add_argument("--pooling", choices=POOLINGS, help="default: the encoder's")
  if single_run:
    g.add_argument("--learning-rate", type=learning_rate, default=defaults.learning_rate,
                   help=f"Adam's peak learning rate, in (0, {MAX_LEARNING_RATE:g}]")
    g.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    g.add_argument("--seed", type=int, default=defaults.seed)
  g.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                 help="global batch size, split over the replicas of a distribution strategy")
  if max_seq_length is not None:
    g.add_argument("--max-seq-length", type=positive_int, default=max_seq_length)
  g.add_argument("--max-train-examples", type=positive_int, help="a seeded random subset of the training set")
  add_strategy_arguments(parser)
  if prefix_cache:
    g = parser.add_argument_group("frozen-bottom cache (docs/performance.md)")
    # Named --prefix-cache* until 0.2.0 (still accepted): "prefix" now means prefix tuning's learned vectors.
    g.add_argument("--frozen-bottom-cache", "--prefix-cache", dest="prefix_cache", action="store_true",
                   help="run the frozen layers below the first trained one once per example and train on "
                        "their cached outputs (needs --adapter-layers with a top range of layers, or "
                        "--method top-k; freezes the LayerNorms of the frozen bottom too)")
    g.add_argument("--frozen-bottom-cache-dir", "--prefix-cache-dir", dest="prefix_cache_dir", metavar="DIR",
                   help="where a frozen-bottom cache too large for memory goes (a temporary file, deleted after)")


def add_strategy_arguments(parser: argparse.ArgumentParser) -> None:
  """The one set of distribution and speed flags of every command that trains (docs/distributed.md)."""
  defaults = TrainConfig()
  g = parser.add_argument_group("distribution and speed (docs/distributed.md, docs/performance.md)")
  g.add_argument("--strategy", default=defaults.strategy, choices=STRATEGIES,
                 help="tf.distribute strategy (auto: a TPU if one resolves, mirrored with several GPUs, "
                      "else default; multi-worker reads TF_CONFIG)")
  g.add_argument("--tpu", metavar="NAME|grpc://HOST:PORT|local",
                 help="the TPU for --strategy tpu or auto: its name, its address, or local on a TPU VM")
  g.add_argument("--worker-timeout", type=positive_float, default=defaults.worker_timeout, metavar="SECONDS",
                 help="how long to wait for the other workers of TF_CONFIG (multi-worker) or for the TPU at "
                      "--tpu grpc://HOST:PORT to answer, then fail (default %(default)g)")
  g.add_argument("--static-shapes", action=argparse.BooleanOptionalAction, default=defaults.static_shapes,
                 help="pad batches to a few fixed lengths with a fixed batch size (default: on under a TPU "
                      "or with --jit-compile)")
  g.add_argument("--static-lengths", type=positive_int, nargs="+", metavar="L", default=defaults.static_lengths,
                 help=f"the fixed lengths under static shapes, ascending, at most {MAX_STATIC_LENGTHS}, the longest "
                      "holding every example (default: the ones with the least padding for the data's lengths)")
  g.add_argument("--steps-per-execution", type=positive_int, default=defaults.steps_per_execution,
                 metavar="N", help="training steps per call of the compiled train function")
  g.add_argument("--jit-compile", action="store_true",
                 help="XLA-compile the train and predict steps (for accelerators; slower on CPU)")
  g.add_argument("--mixed-precision", choices=MIXED_PRECISION_CHOICES,
                 help="compute in bfloat16 or float16, variables in float32 (for accelerators)")


def method_config(value: str) -> dict:
  """--method-config: a JSON object of the method's settings."""
  try:
    parsed = json.loads(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"rank\": 8}}', got {value!r}") from None
  if not isinstance(parsed, dict):
    raise argparse.ArgumentTypeError(f"must be a JSON object of the method's settings, got {value!r}")
  return parsed


# Built-in methods with flags of their own already: the adapter's --adapter-*, top-k's --top-k.
_METHODS_WITH_OWN_FLAGS = ("adapter", "top-k")
# Where add_method_config_argument keeps a method flag's value: dest = PREFIX + method + "__" + field.
_METHOD_FLAG_DEST = "method_setting__"


def _method_flag_fields():
  """(method name, its config's dataclass field) for every field of a built-in method's config: each one
  becomes the flag --<method>-<field> (a plugin's settings go through --method-config)."""
  from adapter_keras.methods.registry import BUILTIN_METHODS  # pylint: disable=import-outside-toplevel
  for method in BUILTIN_METHODS:
    if method.name not in _METHODS_WITH_OWN_FLAGS and dataclasses.is_dataclass(method.config_class):
      for field in dataclasses.fields(method.config_class):
        if field.metadata.get("flag", "") is not None:  # None: a field the library fills, not a setting
          yield method.name, field


def _method_flag(method: str, field_name: str) -> str:
  """--<method>-<field>, or the flag the field names in its metadata (fusion's sources: --fuse)."""
  from adapter_keras.methods.registry import get_method  # pylint: disable=import-outside-toplevel
  config_class = get_method(method).config_class
  fields = {f.name: f for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else {}
  own = fields[field_name].metadata.get("flag") if field_name in fields else None
  return own or f"--{method}-{field_name.replace('_', '-')}"


def add_method_config_argument(parser) -> None:
  """--method-config JSON (the settings of any method), and a flag --<method>-<field> per field of each
  built-in method's config (LoRA's --lora-rank, ...), made from the dataclass fields so that a field cannot
  go without a flag; their type follows the field's default."""
  parser.add_argument("--method-config", type=method_config, metavar="JSON",
                      help="the settings of the --method, as a JSON object (a plugin's; a built-in method's "
                           "also have flags of their own)")
  for method, field in _method_flag_fields():
    default = field.default
    kwargs = dict(dest=f"{_METHOD_FLAG_DEST}{method}__{field.name}", default=None,
                  metavar=field.metadata.get("metavar", field.name.upper()),
                  help=f"--method {method}: " + field.metadata.get("help", f"its {field.name} (default {default!r})"))
    if isinstance(default, bool):
      kwargs.update(action=argparse.BooleanOptionalAction, metavar=None)
    elif isinstance(default, tuple):
      kwargs.update(nargs="+", metavar=field.metadata.get("metavar", field.name.upper().rstrip("S")))
    elif isinstance(default, (int, float)):
      kwargs["type"] = type(default)
    parser.add_argument(_method_flag(method, field.name), **kwargs)


def method_config_from_args(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
  """The --method's settings: --method-config's object plus its own --<method>-<field> flags (None when
  neither is given). A flag of another method, or a setting given twice, is a ValueError naming the flag."""
  config = None if getattr(args, "method_config", None) is None else dict(args.method_config)
  for dest, value in sorted(vars(args).items()):
    if not dest.startswith(_METHOD_FLAG_DEST) or value is None:
      continue
    method, field = dest[len(_METHOD_FLAG_DEST):].split("__")
    flag = _method_flag(method, field)
    if method != args.method:
      raise ValueError(f"{flag} is a setting of --method {method}, not of --method {args.method}")
    if config is not None and field in config:
      raise ValueError(f"{flag} and --method-config both set {field}; give it once")
    config = dict(config or {}, **{field: value})
  return config


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
  """--checkpoint-every, for the commands that train into --out (train, sweep, train-squad)."""
  parser.add_argument("--checkpoint-every", type=positive_int, default=DEFAULT_CHECKPOINT_EVERY,
                      metavar="STEPS",
                      help="write a step checkpoint every STEPS steps (default %(default)s) and at every epoch "
                           "end, to OUT/checkpoint (a sweep trial's: OUT/trials/<setting>/checkpoint); "
                           "re-running a killed command resumes from the newest one")


def train_config_kwargs(args: argparse.Namespace, **overrides: Any) -> Dict[str, Any]:
  """TrainConfig keyword arguments from the flags `add_training_arguments` added.

  `overrides` replace flag values (e.g. method="adapter", or the adapter
  size of a loop, as adapter_size=...).
  """
  adapter_size = overrides.pop("adapter_size", None)
  kwargs = {name: getattr(args, name) for name in _PLAIN_TRAIN_FIELDS if hasattr(args, name)}
  if hasattr(args, "method"):
    kwargs["method_config"] = method_config_from_args(args)
  kwargs["adapter"] = adapter_config_from_args(args, size=adapter_size)
  kwargs.update(overrides)
  return kwargs


# ---------------------------------------------------------------- data sources


def add_data_arguments(parser: argparse.ArgumentParser, need_train: bool = True,
                       label_names: bool = False) -> None:
  """The "data" flags: a GLUE task (--task with --data-dir or --tfds-data-dir) or generic files.

  `need_train=False` leaves out --train (commands that only evaluate);
  `label_names` adds --label-names (a fixed, ordered label set for files).
  """
  group = parser.add_argument_group("data")
  group.add_argument("--task", help="task name: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, "
                                    "rte, wnli) or a name for a generic task")
  group.add_argument("--data-dir", help="GLUE directory (download_glue_data.py layout)")
  group.add_argument("--tfds-data-dir", help="read glue/<task> from TensorFlow Datasets in this dir")
  if need_train:
    group.add_argument("--train", dest="train_file", help="generic train file (.csv, .tsv, .jsonl)")
  group.add_argument("--dev", dest="dev_file", help="generic dev/evaluation file")
  group.add_argument("--text-column")
  group.add_argument("--text-b-column")
  group.add_argument("--label-column")
  group.add_argument("--regression", action="store_true", help="generic files hold float labels")
  if label_names:
    group.add_argument("--label-names", help="comma-separated label values in class-id order "
                                             "(default: sorted values of the train file)")


def data_source_from_args(args: argparse.Namespace):
  """The tasks.sources.DataSource that `add_data_arguments`' flags describe."""
  from adapter_keras.tasks.sources import DataSource  # pylint: disable=import-outside-toplevel
  label_names = getattr(args, "label_names", None)
  return DataSource(task=args.task, data_dir=args.data_dir, tfds_data_dir=args.tfds_data_dir,
                    train_file=getattr(args, "train_file", None), dev_file=args.dev_file,
                    text_column=args.text_column, text_b_column=args.text_b_column,
                    label_column=args.label_column, regression=args.regression,
                    label_names=label_names.split(",") if label_names else None)
