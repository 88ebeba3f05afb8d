"""The AutoML baseline's search space: Table 5 of Houlsby et al. (2019), row by row.

Table 5 of the paper's supplementary material lists 20 parameters, each with a
set of values; `define_search_space(hp, space)` declares each of them as one
keras-tuner hyperparameter (`hp.Choice`, `hp.Boolean` for {True, False}) with
exactly the paper's set. Rows 4-8 are active only when `use_convolution` is on,
rows 10-13 only when `hidden_layers > 0`, row 15 (the batch size) only when the
deep optimizer (row 14) is lazy adam, and row 2 (fine-tuning) only for modules
that can be fine-tuned from TF2 (a TF1 hub.Module such as Table 6's
universal-sentence-encoder/2 is searched frozen). Inactive parameters are None
in the `TrialConfig`.

Adagrad trials train with batch `ADAGRAD_BATCH_SIZE` = 128: Table 5 gives a batch
size for lazy adam only, 128 is the smaller of its two sizes, and it is the batch
every Adagrad trial of the earlier (21-row) transcription used, so their trials compare.

`SearchSpaceHyperModel` wraps that for keras-tuner, which builds the
hypermodel repeatedly up front to discover the conditional parameters. Its
`build` returns the `TrialConfig`, not a model: keras-tuner only knows Keras 3
models, so the tuner builds the tf_keras model itself.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Dict, Mapping, Optional, Tuple

import keras_tuner

from adapter_keras.values import is_number
from automl_baseline.modules import TABLE6_MODULES, is_frozen_only
from automl_baseline.optimizers import DEEP_OPTIMIZERS

# Table 5, by row number: each row's set of values.
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "swish", "sigmoid", "tanh")      # rows 4 and 11
CONV_MAX_NGRAM = (2, 3)                                                         # row 6
CONV_DROPOUT = (0.0, 0.1, 0.2, 0.3, 0.4)                                        # row 7
CONV_FILTERS = (32, 64, 128)                                                    # row 8
HIDDEN_LAYERS = (0, 1, 2, 3, 5)                                                 # row 9
HIDDEN_SIZE = (64, 128, 256)                                                    # row 10
HIDDEN_NORMALIZATION = ("none", "batch", "layer")                               # row 12
HIDDEN_DROPOUT = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)                           # row 13
# Row 14 is optimizers.DEEP_OPTIMIZERS ("adagrad", "lazy_adam").
LAZY_ADAM_BATCH_SIZES = (128, 256)                                              # row 15
LEARNING_RATES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5)                           # rows 16 and 18
REGULARIZATION_WEIGHTS = (0.0, 0.0001, 0.001, 0.01)                             # rows 17 and 19
TRAINING_SAMPLES = (100_000, 200_000, 500_000, 1_000_000, 2_000_000)            # row 20

# Not in Table 5, which sizes lazy adam's batches only (see the module docstring).
ADAGRAD_BATCH_SIZE = 128


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Which modules a search uses, and how it may narrow Table 5's optimizer rows.

  Args:
    embedding_modules: TF Hub handles or module directories (Table 6 by default).
    fine_tune_choices: (False, True) searches both; (False,) never fine-tunes.
    frozen_modules: modules searched without fine-tuning whatever
      `fine_tune_choices` says. TF1 hub.Modules (`modules.is_frozen_only`) are
      added automatically: TF2 cannot fine-tune them.
    deep_optimizers: row 14's optimizers to search ("adagrad", "lazy_adam"; both by default).
    batch_sizes: row 15's lazy adam batch sizes to search ((128, 256) by default).
  """

  embedding_modules: Tuple[str, ...] = TABLE6_MODULES
  fine_tune_choices: Tuple[bool, ...] = (False, True)
  frozen_modules: Tuple[str, ...] = ()
  deep_optimizers: Tuple[str, ...] = DEEP_OPTIMIZERS
  batch_sizes: Tuple[int, ...] = LAZY_ADAM_BATCH_SIZES

  def __post_init__(self):
    object.__setattr__(self, "embedding_modules", tuple(self.embedding_modules))
    object.__setattr__(self, "fine_tune_choices", tuple(bool(c) for c in self.fine_tune_choices))
    object.__setattr__(self, "deep_optimizers", tuple(self.deep_optimizers))
    object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
    if not self.embedding_modules:
      raise ValueError("the search space needs at least one embedding module")
    if len(set(self.embedding_modules)) != len(self.embedding_modules):
      raise ValueError(f"embedding modules repeat: {list(self.embedding_modules)}")
    if not self.fine_tune_choices or len(set(self.fine_tune_choices)) != len(self.fine_tune_choices):
      raise ValueError(f"fine_tune_choices must be (False,), (True,) or (False, True), "
                       f"got {self.fine_tune_choices}")
    unknown = sorted(set(self.frozen_modules) - set(self.embedding_modules))
    if unknown:
      raise ValueError(f"frozen modules {unknown} are not among the embedding modules")
    frozen = set(self.frozen_modules) | {m for m in self.embedding_modules if is_frozen_only(m)}
    object.__setattr__(self, "frozen_modules",
                       tuple(m for m in self.embedding_modules if m in frozen))
    if self.fine_tune_choices == (True,) and self.frozen_modules:
      raise ValueError(f"fine_tune_choices=(True,) but {list(self.frozen_modules)} cannot be "
                       "fine-tuned (TF1 hub.Module format)")
    for name, values, allowed in (("deep_optimizers", self.deep_optimizers, DEEP_OPTIMIZERS),
                                  ("batch_sizes", self.batch_sizes, LAZY_ADAM_BATCH_SIZES)):
      if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must be distinct values, at least one, got {list(values)}")
      if not all(v in allowed and type(v) is type(allowed[0]) for v in values):  # pylint: disable=unidiomatic-typecheck
        raise ValueError(f"{name} must be among {list(allowed)} (Table 5), got {list(values)}")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
  """One point of the space; fields of inactive conditional parameters are None."""

  embedding_module: str
  fine_tune_module: bool
  use_convolution: bool
  conv_activation: Optional[str]
  conv_batch_norm: Optional[bool]
  conv_max_ngram: Optional[int]
  conv_dropout: Optional[float]
  conv_filters: Optional[int]
  hidden_layers: int
  hidden_size: Optional[int]
  hidden_activation: Optional[str]
  hidden_normalization: Optional[str]
  hidden_dropout: Optional[float]
  deep_optimizer: str
  batch_size: Optional[int]
  deep_learning_rate: float
  deep_regularization: float
  wide_learning_rate: float
  wide_regularization: float
  training_samples: int

  @property
  def train_batch_size(self) -> int:
    """Row 15's batch size under lazy adam; Adagrad's fixed one otherwise."""
    return ADAGRAD_BATCH_SIZE if self.batch_size is None else self.batch_size

  def active_hyperparameters(self) -> Dict[str, Any]:
    """The active parameters by name (what best.json records)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_hyperparameters(cls, values: Mapping[str, Any]) -> "TrialConfig":
    """Rebuilds a point from `active_hyperparameters()` (e.g. best.json), checking it."""
    for required in ("embedding_module", "fine_tune_module"):
      if required not in values:
        raise ValueError(f"hyperparameters lack {required!r}")
    space = SearchSpace(
        embedding_modules=(values["embedding_module"],),
        fine_tune_choices=(bool(values["fine_tune_module"]),))
    return _config_with_values(space, values)


def _choice_or_fixed(hp: keras_tuner.HyperParameters, name: str, values: Tuple[Any, ...]):
  # One value is a setting, not a search dimension; hp.Fixed still records it with each trial.
  return hp.Choice(name, list(values)) if len(values) > 1 else hp.Fixed(name, values[0])


def define_search_space(hp: keras_tuner.HyperParameters,
                        space: SearchSpace = SearchSpace()) -> TrialConfig:
  """Declares Table 5 on `hp` and returns its current values."""
  # Row 1 (Table 6) and row 2.
  embedding_module = hp.Choice("embedding_module", list(space.embedding_modules))
  tunable = [m for m in space.embedding_modules if m not in space.frozen_modules]
  if len(space.fine_tune_choices) == 1 or not tunable:
    # hp.Choice would turn booleans into 0/1.
    fine_tune_module = hp.Fixed("fine_tune_module", space.fine_tune_choices[0] and bool(tunable))
  elif space.frozen_modules:
    with hp.conditional_scope("embedding_module", tunable):
      fine_tune_module = hp.Boolean("fine_tune_module", default=False)
    fine_tune_module = bool(fine_tune_module) if embedding_module in tunable else False
  else:
    fine_tune_module = hp.Boolean("fine_tune_module", default=False)
  # Rows 3-8.
  use_convolution = hp.Boolean("use_convolution", default=False)
  with hp.conditional_scope("use_convolution", [True]):
    conv_values = dict(
        conv_activation=hp.Choice("conv_activation", list(ACTIVATIONS)),
        conv_batch_norm=hp.Boolean("conv_batch_norm", default=False),
        conv_max_ngram=hp.Choice("conv_max_ngram", list(CONV_MAX_NGRAM)),
        conv_dropout=hp.Choice("conv_dropout", list(CONV_DROPOUT)),
        conv_filters=hp.Choice("conv_filters", list(CONV_FILTERS)))
  conv = conv_values if use_convolution else {k: None for k in conv_values}
  # Rows 9-13.
  hidden_layers = hp.Choice("hidden_layers", list(HIDDEN_LAYERS))
  with hp.conditional_scope("hidden_layers", [n for n in HIDDEN_LAYERS if n > 0]):
    hidden_values = dict(
        hidden_size=hp.Choice("hidden_size", list(HIDDEN_SIZE)),
        hidden_activation=hp.Choice("hidden_activation", list(ACTIVATIONS)),
        hidden_normalization=hp.Choice("hidden_normalization", list(HIDDEN_NORMALIZATION)),
        hidden_dropout=hp.Choice("hidden_dropout", list(HIDDEN_DROPOUT)))
  hidden = hidden_values if hidden_layers > 0 else {k: None for k in hidden_values}
  # Rows 14-15.
  deep_optimizer = _choice_or_fixed(hp, "deep_optimizer", space.deep_optimizers)
  batch_size = None
  if "lazy_adam" in space.deep_optimizers:
    with hp.conditional_scope("deep_optimizer", ["lazy_adam"]):
      lazy_adam_batch_size = _choice_or_fixed(hp, "batch_size", space.batch_sizes)
    if deep_optimizer == "lazy_adam":
      batch_size = int(lazy_adam_batch_size)
  return TrialConfig(
      embedding_module=embedding_module,
      fine_tune_module=bool(fine_tune_module),
      use_convolution=bool(use_convolution),
      hidden_layers=int(hidden_layers),
      deep_optimizer=deep_optimizer,
      batch_size=batch_size,
      # Rows 16-20.
      deep_learning_rate=hp.Choice("deep_learning_rate", list(LEARNING_RATES)),
      deep_regularization=hp.Choice("deep_regularization", list(REGULARIZATION_WEIGHTS)),
      wide_learning_rate=hp.Choice("wide_learning_rate", list(LEARNING_RATES)),
      wide_regularization=hp.Choice("wide_regularization", list(REGULARIZATION_WEIGHTS)),
      training_samples=hp.Choice("training_samples", list(TRAINING_SAMPLES)),
      **conv, **hidden)


class SearchSpaceHyperModel(keras_tuner.HyperModel):
  """keras-tuner's view of the space: `build(hp)` -> TrialConfig."""

  def __init__(self, space: SearchSpace = SearchSpace()):
    super().__init__(name="automl_baseline", tunable=True)
    self.space = space

  def build(self, hp: keras_tuner.HyperParameters) -> TrialConfig:
    return define_search_space(hp, self.space)


def space_signature(space: SearchSpace) -> list:
  """Every hyperparameter's name, values and conditions: two searches compare only if these match."""
  hp = keras_tuner.HyperParameters()
  define_search_space(hp, space)
  return [p.get_config() for p in hp.space]


def sample_config(space: SearchSpace, seed: int, **fixed: Any) -> TrialConfig:
  """A random point of the space with some parameters `fixed` (tests, smoke runs)."""
  hp = keras_tuner.HyperParameters()
  define_search_space(hp, space)
  rng = random.Random(seed)
  values = {p.name: p.random_sample(rng.randrange(2**31)) for p in hp.space}
  values.update(fixed)
  return _config_with_values(space, values, require_all_active=False)


def _config_with_values(space: SearchSpace, values: Mapping[str, Any],
                        require_all_active: bool = True) -> TrialConfig:
  hp = keras_tuner.HyperParameters()
  define_search_space(hp, space)
  by_name = {p.name: p for p in hp.space}
  unknown = sorted(set(values) - set(by_name))
  if unknown:
    raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(by_name)}")
  for name, value in values.items():
    _check_value(by_name[name], value)
  hp.values.update(values)
  try:
    config = define_search_space(hp, space)
  except KeyError as e:  # an active conditional parameter that never had a value
    raise ValueError(f"hyperparameter {e.args[0]!r} is active but has no value") from None
  missing = sorted(set(config.active_hyperparameters()) - set(values))
  if require_all_active and missing:
    raise ValueError(f"hyperparameters {missing} are active but have no value")
  return config


def _check_value(parameter, value: Any) -> None:
  config = parameter.get_config()
  if "values" in config:  # Choice
    ok = value in config["values"] and type(value) is type(config["values"][0])  # pylint: disable=unidiomatic-typecheck
    if not ok and is_number(value):
      ok = any(value == v and not isinstance(v, bool) for v in config["values"])
  elif "value" in config:  # Fixed
    ok = value == config["value"] and type(value) is type(config["value"])  # pylint: disable=unidiomatic-typecheck
  else:  # Boolean
    ok = isinstance(value, bool)
  if not ok:
    raise ValueError(f"hyperparameter {parameter.name}={value!r} is outside the search space "
                     f"({ {k: v for k, v in config.items() if k != 'name'} })")
