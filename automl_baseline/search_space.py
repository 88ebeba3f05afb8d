"""The AutoML baseline's search space: Table 5 of Houlsby et al. (2019).

`define_search_space(hp, space)` declares every Table 5 parameter as a
keras-tuner hyperparameter and returns the point as a `TrialConfig`. The
convolution parameters live in a conditional scope that is active only when
`use_convolution` is on, the hidden-layer parameters in one active only when
`hidden_layers > 0`; inactive parameters are None in the `TrialConfig`.

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

from automl_baseline.modules import TABLE6_MODULES
from automl_baseline.optimizers import DEEP_OPTIMIZERS

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "swish", "sigmoid", "tanh")
CONV_MAX_NGRAM = (2, 3)
CONV_DROPOUT = (0.0, 0.1, 0.2, 0.3, 0.4)
CONV_FILTERS = (32, 64, 128)
HIDDEN_LAYERS = (0, 1, 2, 3, 5)
HIDDEN_SIZE = (64, 128, 256)
HIDDEN_NORMALIZATION = ("none", "batch", "layer")
HIDDEN_DROPOUT = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
BATCH_SIZE = (128, 256)
TRAINING_SAMPLES = (100_000, 200_000, 500_000, 1_000_000, 2_000_000)
# (min, max) of the log-uniform ranges.
DEEP_LEARNING_RATE = (1e-4, 0.5)
DEEP_REGULARIZATION = (1e-6, 1e-2)
WIDE_LEARNING_RATE = (1e-3, 1.0)
WIDE_REGULARIZATION = (1e-6, 1e-1)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """What a search may vary beyond Table 5's fixed ranges.

  Args:
    embedding_modules: TF Hub handles or module directories (Table 6 by default).
    fine_tune_choices: (False, True) searches both; (False,) never fine-tunes,
      e.g. for TF1 hub.Module handles, which cannot be fine-tuned.
  """

  embedding_modules: Tuple[str, ...] = TABLE6_MODULES
  fine_tune_choices: Tuple[bool, ...] = (False, True)

  def __post_init__(self):
    object.__setattr__(self, "embedding_modules", tuple(self.embedding_modules))
    object.__setattr__(self, "fine_tune_choices", tuple(bool(c) for c in self.fine_tune_choices))
    if not self.embedding_modules:
      raise ValueError("the search space needs at least one embedding module")
    if len(set(self.embedding_modules)) != len(self.embedding_modules):
      raise ValueError(f"embedding modules repeat: {list(self.embedding_modules)}")
    if not self.fine_tune_choices or len(set(self.fine_tune_choices)) != len(self.fine_tune_choices):
      raise ValueError(f"fine_tune_choices must be (False,), (True,) or (False, True), "
                       f"got {self.fine_tune_choices}")


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
  batch_size: int
  deep_learning_rate: float
  deep_regularization: float
  wide_learning_rate: float
  wide_regularization: float
  training_samples: int

  def active_hyperparameters(self) -> Dict[str, Any]:
    """The active parameters by name (what best.json records)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_hyperparameters(cls, values: Mapping[str, Any]) -> "TrialConfig":
    """Rebuilds a point from `active_hyperparameters()` (e.g. best.json), checking it."""
    for required in ("embedding_module", "fine_tune_module"):
      if required not in values:
        raise ValueError(f"hyperparameters lack {required!r}")
    space = SearchSpace(embedding_modules=(values["embedding_module"],),
                        fine_tune_choices=(bool(values["fine_tune_module"]),))
    return _config_with_values(space, values)


def define_search_space(hp: keras_tuner.HyperParameters,
                        space: SearchSpace = SearchSpace()) -> TrialConfig:
  """Declares Table 5 on `hp` and returns its current values."""
  embedding_module = hp.Choice("embedding_module", list(space.embedding_modules))
  if len(space.fine_tune_choices) == 2:
    fine_tune_module = hp.Boolean("fine_tune_module", default=False)
  else:  # hp.Choice would turn booleans into 0/1
    fine_tune_module = hp.Fixed("fine_tune_module", space.fine_tune_choices[0])
  use_convolution = hp.Boolean("use_convolution", default=False)
  conv = dict(conv_activation=None, conv_batch_norm=None, conv_max_ngram=None, conv_dropout=None,
              conv_filters=None)
  with hp.conditional_scope("use_convolution", [True]):
    conv_values = dict(
        conv_activation=hp.Choice("conv_activation", list(ACTIVATIONS)),
        conv_batch_norm=hp.Boolean("conv_batch_norm", default=False),
        conv_max_ngram=hp.Choice("conv_max_ngram", list(CONV_MAX_NGRAM)),
        conv_dropout=hp.Choice("conv_dropout", list(CONV_DROPOUT)),
        conv_filters=hp.Choice("conv_filters", list(CONV_FILTERS)))
  if use_convolution:
    conv = conv_values
  hidden_layers = hp.Choice("hidden_layers", list(HIDDEN_LAYERS))
  hidden = dict(hidden_size=None, hidden_activation=None, hidden_normalization=None,
                hidden_dropout=None)
  with hp.conditional_scope("hidden_layers", [n for n in HIDDEN_LAYERS if n > 0]):
    hidden_values = dict(
        hidden_size=hp.Choice("hidden_size", list(HIDDEN_SIZE)),
        hidden_activation=hp.Choice("hidden_activation", list(ACTIVATIONS)),
        hidden_normalization=hp.Choice("hidden_normalization", list(HIDDEN_NORMALIZATION)),
        hidden_dropout=hp.Choice("hidden_dropout", list(HIDDEN_DROPOUT)))
  if hidden_layers > 0:
    hidden = hidden_values
  return TrialConfig(
      embedding_module=embedding_module,
      fine_tune_module=bool(fine_tune_module),
      use_convolution=bool(use_convolution),
      hidden_layers=int(hidden_layers),
      deep_optimizer=hp.Choice("deep_optimizer", list(DEEP_OPTIMIZERS)),
      batch_size=hp.Choice("batch_size", list(BATCH_SIZE)),
      deep_learning_rate=hp.Float("deep_learning_rate", *DEEP_LEARNING_RATE, sampling="log"),
      deep_regularization=hp.Float("deep_regularization", *DEEP_REGULARIZATION, sampling="log"),
      wide_learning_rate=hp.Float("wide_learning_rate", *WIDE_LEARNING_RATE, sampling="log"),
      wide_regularization=hp.Float("wide_regularization", *WIDE_REGULARIZATION, sampling="log"),
      training_samples=hp.Choice("training_samples", list(TRAINING_SAMPLES)),
      **conv, **hidden)


class SearchSpaceHyperModel(keras_tuner.HyperModel):
  """keras-tuner's view of the space: `build(hp)` -> TrialConfig."""

  def __init__(self, space: SearchSpace = SearchSpace()):
    super().__init__(name="automl_baseline", tunable=True)
    self.space = space

  def build(self, hp: keras_tuner.HyperParameters) -> TrialConfig:
    return define_search_space(hp, self.space)


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
    if not ok and isinstance(value, (int, float)) and not isinstance(value, bool):
      ok = any(value == v and not isinstance(v, bool) for v in config["values"])
  elif "value" in config:  # Fixed
    ok = value == config["value"] and type(value) is type(config["value"])  # pylint: disable=unidiomatic-typecheck
  elif "min_value" in config:  # Float / Int
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and config["min_value"] <= value <= config["max_value"])
  else:  # Boolean
    ok = isinstance(value, bool)
  if not ok:
    raise ValueError(f"hyperparameter {parameter.name}={value!r} is outside the search space "
                     f"({ {k: v for k, v in config.items() if k != 'name'} })")
