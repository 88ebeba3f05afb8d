"""What a training run is given (TrainConfig) and what it gives back (TrainResult).

`TrainConfig` is frozen and validated on construction, like AdapterConfig:
a config that exists is a config that can run (checks that need the encoder,
such as top-k against its depth, happen when it is loaded). Change one with
`dataclasses.replace`. Its `--flags` are cli/flags.py's. `SquadTrainConfig` adds
train-squad's window and decoding settings (no TensorFlow here: the command
line reads the defaults of both).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, List, Optional, Tuple

from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.methods import FROZEN_BOTTOM_METHODS, get_method
from adapter_keras.values import is_integer, is_number

MIXED_PRECISION_CHOICES = ("bfloat16", "float16")
# Adam's step is about the learning rate per step, whatever the gradient's scale: above 1 every weight
# moves by more than its typical size each step, and training only diverges (inf/1e30 gave NaN at
# step 2). The paper's rates are 1e-5..1e-3; full fine-tuning never goes near 1.
MAX_LEARNING_RATE = 1.0
# The most fixed lengths static shapes may use: each is one compilation of the train (and predict) step.
MAX_STATIC_LENGTHS = 8
# tf.distribute strategies by name (train/distribute.py builds them).
STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")
# Seconds a run waits for its peers (train/distribute.py): long enough for workers started one by one by hand
# or by a scheduler, short enough that a worker that never comes is an error rather than a hang.
DEFAULT_WORKER_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run needs besides the data.

  Attributes:
    encoder: a name ("minilm-l6") or a directory (pretrained.load_encoder).
    method: a tuning method (methods.get_method); top_k goes with "top-k".
    adapter: the adapters' architecture (used when the method is "adapter").
    method_config: the settings of any other method with settings (a plugin's), as a dict.
    learning_rate, epochs, batch_size, warmup_fraction: the paper's recipe.
    max_seq_length: tokens per example, special tokens included.
    seed: data order, dropout, initialisers and the training subset.
    max_train_examples: a seeded random subset of the training set.
    pooling: "cls" or "mean"; None takes the encoder's default.
    strategy: a train.distribute strategy name; tpu: the TPU to use with
      "tpu" (or "auto"): a name, grpc://HOST:PORT, or "local" on a TPU VM.
    static_shapes: pad batches to a few fixed lengths with a fixed batch size
      (train/inputs.py), which XLA and TPUs need; None: on under a TPU or
      with jit_compile.
    steps_per_execution: training steps per call of the compiled train
      function (fewer host round trips on accelerators).
    bucket_by_length: batches of similar lengths (train/inputs.py).
    jit_compile, mixed_precision, prefix_cache: speed options (docs/performance.md).
    static_lengths: the fixed lengths under static shapes, ascending, at most
      MAX_STATIC_LENGTHS and max_seq_length; None: chosen from the data's
      lengths (train/inputs.py: static_batch_lengths).
    worker_timeout: seconds to wait for the other workers of a multi-worker
      cluster (TF_CONFIG) or for a TPU at grpc://HOST:PORT to answer.
  """

  encoder: str = "minilm-l6"
  method: str = "adapter"
  top_k: Optional[int] = None
  adapter: AdapterConfig = dataclasses.field(default_factory=AdapterConfig)
  learning_rate: float = 3e-4
  epochs: int = 3
  batch_size: int = 32
  max_seq_length: int = 128
  seed: int = 0
  max_train_examples: Optional[int] = None
  pooling: Optional[str] = None  # None: the encoder's default
  dropout_rate: float = 0.1
  warmup_fraction: float = 0.1
  strategy: str = "default"
  tpu: Optional[str] = None
  static_shapes: Optional[bool] = None  # None: on under a TPU or with jit_compile
  steps_per_execution: int = 1
  bucket_by_length: bool = True
  # Speed options (docs/performance.md).
  jit_compile: bool = False
  mixed_precision: Optional[str] = None  # None (float32), "bfloat16" or "float16"
  prefix_cache: bool = False
  method_config: Optional[Dict] = None
  static_lengths: Optional[Tuple[int, ...]] = None  # None: from the data's lengths
  worker_timeout: float = DEFAULT_WORKER_TIMEOUT

  # The fields of adapter_keras 0.2.0: what every earlier run.json records (to_dict).
  fields_of_0_2_0: ClassVar[frozenset] = frozenset({
      "encoder", "method", "top_k", "adapter", "learning_rate", "epochs", "batch_size", "max_seq_length", "seed",
      "max_train_examples", "pooling", "dropout_rate", "warmup_fraction", "strategy", "tpu", "static_shapes",
      "steps_per_execution", "bucket_by_length", "jit_compile", "mixed_precision", "prefix_cache"})

  def __post_init__(self):
    if self.static_lengths is not None and isinstance(self.static_lengths, (list, tuple)):
      object.__setattr__(self, "static_lengths", tuple(self.static_lengths))  # flags and JSON give lists
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field that cannot run (construction calls it)."""
    if not 0 < self.learning_rate <= MAX_LEARNING_RATE:  # also refuses NaN and inf
      raise ValueError(f"learning rate must be in (0, {MAX_LEARNING_RATE:g}], got {self.learning_rate}")
    for name in ("epochs", "batch_size", "steps_per_execution"):
      value = getattr(self, name)
      if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if self.max_train_examples is not None and self.max_train_examples < 1:
      raise ValueError(f"max_train_examples must be >= 1, got {self.max_train_examples}")
    if not 0 <= self.warmup_fraction < 1:
      raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
    if not isinstance(self.adapter, AdapterConfig):
      raise ValueError(f"adapter must be an AdapterConfig, got {type(self.adapter).__name__}")
    if self.method_config is not None and not isinstance(self.method_config, dict):
      raise ValueError(f"method_config must be a dict of the method's settings, got {self.method_config!r}")
    self.method_settings()  # an unknown method, or settings it cannot take (k < 1), fail here
    if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION_CHOICES:
      raise ValueError(f"mixed_precision must be None or one of {sorted(MIXED_PRECISION_CHOICES)}, "
                       f"got {self.mixed_precision!r}")
    if not is_number(self.worker_timeout) \
        or not 0 < self.worker_timeout < float("inf"):
      raise ValueError(f"worker_timeout must be a finite number of seconds > 0, got {self.worker_timeout!r}")
    if self.strategy not in STRATEGIES:
      raise ValueError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if self.tpu is not None and self.strategy not in ("tpu", "auto"):
      raise ValueError(f"--tpu {self.tpu} goes with --strategy tpu (or auto), not {self.strategy!r}")
    if self.static_lengths is not None:
      lengths = self.static_lengths
      if (not isinstance(lengths, tuple) or not lengths or len(lengths) > MAX_STATIC_LENGTHS
          or any(not is_integer(n) for n in lengths)
          or list(lengths) != sorted(set(lengths)) or lengths[0] < 1 or lengths[-1] > self.max_seq_length):
        raise ValueError(f"static_lengths must be 1 to {MAX_STATIC_LENGTHS} ascending integers in "
                         f"[1, max_seq_length {self.max_seq_length}], got {lengths!r}")
      if self.static_shapes is False:
        raise ValueError("static_lengths apply under static shapes; they were turned off (--no-static-shapes)")
    if self.prefix_cache and self.method not in FROZEN_BOTTOM_METHODS:
      raise ValueError(f"the frozen-bottom cache applies to methods {' and '.join(FROZEN_BOTTOM_METHODS)}, "
                       f"not {self.method!r}: it trains the bottom layer, so no frozen bottom is left to cache")

  def method_settings(self):
    """The method's config object: `adapter` for "adapter", k = `top_k` for "top-k", `method_config` otherwise."""
    return get_method(self.method).make_config(self.method_config, adapter=self.adapter, top_k=self.top_k)

  def to_dict(self) -> Dict:
    """The config as JSON values. Fields added after 0.2.0 appear only when they differ from their
    default, so that a run directory written by 0.2.0 is still recognised as the same run (run.json)."""
    d = dataclasses.asdict(self)
    d["adapter"] = self.adapter.to_dict()
    for field in dataclasses.fields(self):
      if field.name not in self.fields_of_0_2_0 and getattr(self, field.name) == _default_of(field):
        del d[field.name]
    return d

  @classmethod
  def from_dict(cls, d: Dict) -> "TrainConfig":
    d = dict(d)
    d["adapter"] = AdapterConfig.from_dict(d["adapter"])
    return cls(**d)


def _default_of(field: dataclasses.Field):
  return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


@dataclasses.dataclass(frozen=True)
class SquadTrainConfig(TrainConfig):
  """TrainConfig plus the window and decoding settings (BERT's SQuAD defaults).

  `pooling` and `bucket_by_length` do not apply: the span head reads every
  token and every window is padded to max_seq_length.
  """

  max_seq_length: int = 384
  bucket_by_length: bool = False
  doc_stride: int = 128
  max_query_length: int = 64
  max_answer_length: int = 30
  n_best_size: int = 20

  fields_of_0_2_0: ClassVar[frozenset] = TrainConfig.fields_of_0_2_0 | {
      "doc_stride", "max_query_length", "max_answer_length", "n_best_size"}

  def validate(self) -> None:
    super().validate()
    if self.prefix_cache:
      raise ValueError("the frozen-bottom cache is for classification and regression models, not SQuAD span models")
    for name in ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
      value = getattr(self, name)
      if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

  def squad_settings(self) -> Dict:
    """What evaluation needs besides the tokenizer to score like training did."""
    return dict(doc_stride=self.doc_stride, max_query_length=self.max_query_length,
                max_answer_length=self.max_answer_length, n_best_size=self.n_best_size)


@dataclasses.dataclass(frozen=True)
class TokenTrainConfig(TrainConfig):
  """TrainConfig plus token classification's settings (tasks/token_windows.py).

  `pooling` does not apply (the head reads every token) and neither does the frozen-bottom cache; every
  window is padded to max_seq_length (then trimmed per batch to its longest window unless under static shapes).
  """

  bucket_by_length: bool = False
  doc_stride: int = 64
  label_all_subwords: bool = False

  def validate(self) -> None:
    super().validate()
    if self.prefix_cache:
      raise ValueError("the frozen-bottom cache is for classification and regression models, not token models")
    if not is_integer(self.doc_stride) or self.doc_stride < 1:
      raise ValueError(f"doc_stride must be an integer >= 1, got {self.doc_stride!r}")
    if not isinstance(self.label_all_subwords, bool):
      raise ValueError(f"label_all_subwords must be a bool, got {self.label_all_subwords!r}")

  def token_settings(self) -> Dict:
    """What evaluation needs besides the tokenizer and labels to window and label like training did."""
    return dict(doc_stride=self.doc_stride, label_all_subwords=self.label_all_subwords)


@dataclasses.dataclass
class TrainResult:
  task: str
  method: str
  metrics: Dict[str, float]
  primary_metric: str
  score: float
  best_epoch: int
  history: List[Dict[str, float]]
  trained_params: int
  trained_fraction: float
  seconds: float

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)

  def summary(self, out_dir: Optional[str]) -> Dict:
    """What the train commands print as their --json result."""
    return dict(task=self.task, method=self.method, metrics=self.metrics, primary_metric=self.primary_metric,
                score=self.score, trained_params=self.trained_params, trained_fraction=self.trained_fraction,
                best_epoch=self.best_epoch, out=out_dir)
