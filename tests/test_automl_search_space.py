"""Table 5 as keras-tuner hyperparameters: every parameter, its values and its conditions."""
import keras_tuner
import pytest

from automl_baseline import search_space as ss
from automl_baseline.modules import TABLE6_MODULES

CONV_PARAMETERS = {"conv_activation", "conv_batch_norm", "conv_max_ngram", "conv_dropout",
                   "conv_filters"}
HIDDEN_PARAMETERS = {"hidden_size", "hidden_activation", "hidden_normalization", "hidden_dropout"}
ACTIVATIONS = ["relu", "relu6", "leaky_relu", "swish", "sigmoid", "tanh"]

# Table 5's discrete parameters and their values.
EXPECTED_CHOICES = {
    "conv_activation": ACTIVATIONS,
    "conv_max_ngram": [2, 3],
    "conv_dropout": [0.0, 0.1, 0.2, 0.3, 0.4],
    "conv_filters": [32, 64, 128],
    "hidden_layers": [0, 1, 2, 3, 5],
    "hidden_size": [64, 128, 256],
    "hidden_activation": ACTIVATIONS,
    "hidden_normalization": ["none", "batch", "layer"],
    "hidden_dropout": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5],
    "deep_optimizer": ["adagrad", "lazy_adam"],
    "batch_size": [128, 256],
    "training_samples": [100_000, 200_000, 500_000, 1_000_000, 2_000_000],
    "embedding_module": list(TABLE6_MODULES),
}
LOG_RANGES = ("deep_learning_rate", "deep_regularization", "wide_learning_rate",
              "wide_regularization")
BOOLEANS = ("fine_tune_module", "use_convolution", "conv_batch_norm")


@pytest.fixture(scope="module")
def space_by_name():
  hp = keras_tuner.HyperParameters()
  ss.define_search_space(hp)
  return {p.name: p for p in hp.space}


def test_every_table5_parameter_is_in_the_space(space_by_name):
  expected = set(EXPECTED_CHOICES) | set(LOG_RANGES) | set(BOOLEANS)
  assert set(space_by_name) == expected
  for name, values in EXPECTED_CHOICES.items():
    assert space_by_name[name].values == values, name
  for name in LOG_RANGES:
    config = space_by_name[name].get_config()
    assert config["sampling"] == "log" and 0 < config["min_value"] < config["max_value"], name
  for name in BOOLEANS:
    assert type(space_by_name[name]).__name__ == "Boolean", name


def test_table6_defaults_are_tf2_handles():
  assert len(TABLE6_MODULES) == 9
  assert all(h.startswith("https://tfhub.dev/google/") for h in TABLE6_MODULES)
  assert not any(h.endswith("/1") for h in TABLE6_MODULES)  # /1 are TF1 hub.Modules
  assert "https://tfhub.dev/google/universal-sentence-encoder/4" in TABLE6_MODULES


def test_conditions(space_by_name):
  for name, parameter in space_by_name.items():
    conditions = [c.get_config() for c in parameter.conditions]
    if name in CONV_PARAMETERS:
      assert conditions == [{"name": "use_convolution", "values": [True]}], name
    elif name in HIDDEN_PARAMETERS:
      assert conditions == [{"name": "hidden_layers", "values": [1, 2, 3, 5]}], name
    else:
      assert conditions == [], name


def test_inactive_parameters_are_none():
  space = ss.SearchSpace(embedding_modules=("m",))
  flat = ss.sample_config(space, 0, use_convolution=False, hidden_layers=0)
  assert all(getattr(flat, n) is None for n in CONV_PARAMETERS | HIDDEN_PARAMETERS)
  deep = ss.sample_config(space, 0, use_convolution=True, hidden_layers=5)
  assert all(getattr(deep, n) is not None for n in CONV_PARAMETERS | HIDDEN_PARAMETERS)
  assert set(flat.active_hyperparameters()).isdisjoint(CONV_PARAMETERS | HIDDEN_PARAMETERS)


def test_keras_tuner_discovers_the_conditional_parameters():
  oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
  hypermodel = ss.SearchSpaceHyperModel(ss.SearchSpace(embedding_modules=("a", "b")))
  hp = oracle.get_space()
  hypermodel.build(hp)
  assert {p.name for p in hp.space} >= CONV_PARAMETERS | HIDDEN_PARAMETERS


def test_fine_tune_choices():
  hp = keras_tuner.HyperParameters()
  config = ss.define_search_space(hp, ss.SearchSpace(embedding_modules=("m",),
                                                     fine_tune_choices=(False,)))
  assert config.fine_tune_module is False
  assert hp.values["fine_tune_module"] is False  # stays a bool, not 0
  with pytest.raises(ValueError, match="fine_tune_choices"):
    ss.SearchSpace(fine_tune_choices=())
  with pytest.raises(ValueError, match="repeat"):
    ss.SearchSpace(embedding_modules=("m", "m"))


def test_from_hyperparameters_round_trip_and_validation():
  space = ss.SearchSpace(embedding_modules=("m",))
  for seed in range(5):
    config = ss.sample_config(space, seed)
    assert ss.TrialConfig.from_hyperparameters(config.active_hyperparameters()) == config
  values = ss.sample_config(space, 0, use_convolution=True).active_hyperparameters()
  with pytest.raises(ValueError, match="conv_filters=48 is outside"):
    ss.TrialConfig.from_hyperparameters(dict(values, conv_filters=48))
  with pytest.raises(ValueError, match="unknown hyperparameters"):
    ss.TrialConfig.from_hyperparameters(dict(values, learning_rate=0.1))
  del values["conv_dropout"]
  with pytest.raises(ValueError, match="conv_dropout"):
    ss.TrialConfig.from_hyperparameters(values)
