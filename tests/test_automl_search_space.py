"""Table 5 and Table 6 as keras-tuner hyperparameters, compared entry by entry with the paper.

The transcriptions below are copied from the paper (Houlsby et al. 2019, supplementary
material of arXiv:1902.00751v2, Tables 5 and 6) in its own spelling, not from the code.
"""
import keras_tuner
import pytest

from automl_baseline import modules
from automl_baseline import search_space as ss

SETS, INTERVAL = "set", "interval"
ACTIVATIONS = {"relu", "relu6", "leaky relu", "swish", "sigmoid", "tanh"}
LEARNING_RATES = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5}
REGULARIZATION = {0.0, 0.0001, 0.001, 0.01}
BOOL = {True, False}

# Table 5: (row, the paper's parameter name, our hyperparameter, kind, the paper's values).
TABLE5 = [
    (1, "Input embedding modules", "embedding_module", "table 6", None),
    (2, "Fine-tune input embedding module", "fine_tune_module", SETS, BOOL),
    (3, "Lowercase text", "lowercase_text", SETS, BOOL),
    (4, "Remove non alphanumeric text", "remove_non_alphanumeric", SETS, BOOL),
    (5, "Use convolution", "use_convolution", SETS, BOOL),
    (6, "Convolution activation", "conv_activation", SETS, ACTIVATIONS),
    (7, "Convolution batch norm", "conv_batch_norm", SETS, BOOL),
    (8, "Convolution max ngram length", "conv_max_ngram", SETS, {2, 3}),
    (9, "Convolution dropout rate", "conv_dropout", INTERVAL, (0.0, 0.4)),
    (10, "Convolution number of filters", "conv_filters", INTERVAL, (50, 200)),
    (11, "Convolution embedding dropout rate", "conv_embedding_dropout", INTERVAL, (0.0, 0.4)),
    (12, "Number of hidden layers", "hidden_layers", SETS, {0, 1, 2, 3, 5}),
    (13, "Hidden layers size", "hidden_size", SETS, {64, 128, 256}),
    (14, "Hidden layers activation", "hidden_activation", SETS, ACTIVATIONS),
    (15, "Hidden layers normalization", "hidden_normalization", SETS,
     {"none", "batch norm", "layer norm"}),
    (16, "Hidden layers dropout rate", "hidden_dropout", SETS, {0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5}),
    (17, "Deep tower learning rate", "deep_learning_rate", SETS, LEARNING_RATES),
    (18, "Deep tower regularization weight", "deep_regularization", SETS, REGULARIZATION),
    (19, "Wide tower learning rate", "wide_learning_rate", SETS, LEARNING_RATES),
    (20, "Wide tower regularization weight", "wide_regularization", SETS, REGULARIZATION),
    (21, "Number of training samples", "training_samples", SETS, {1e5, 2e5, 5e5, 1e6, 2e6}),
]
# The paper's words for values the code spells as identifiers.
SPELLING = {"leaky relu": "leaky_relu", "batch norm": "batch", "layer norm": "layer"}
# Rows the table makes meaningful only under another row's value (our reading, see the docs).
CONDITIONS = {**{name: ("use_convolution", [True]) for name in (
    "conv_activation", "conv_batch_norm", "conv_max_ngram", "conv_dropout", "conv_filters",
    "conv_embedding_dropout")},
              **{name: ("hidden_layers", [1, 2, 3, 5]) for name in (
                  "hidden_size", "hidden_activation", "hidden_normalization", "hidden_dropout")}}
CONV_PARAMETERS = {n for n, (parent, _) in CONDITIONS.items() if parent == "use_convolution"}
HIDDEN_PARAMETERS = {n for n, (parent, _) in CONDITIONS.items() if parent == "hidden_layers"}
# Not rows of Table 5; a trial needs them, so each is one fixed value unless a search asks for more.
NOT_IN_TABLE5 = {"deep_optimizer": "adagrad", "batch_size": 128}

# Table 6: (ID, embedding dim., the TF Hub handle after the prefix https://tfhub.dev/google/).
TABLE6 = [
    ("English-small", 50, "nnlm-en-dim50-with-normalization/1"),
    ("English-big", 128, "nnlm-en-dim128-with-normalization/1"),
    ("English-wiki-small", 250, "Wiki-words-250-with-normalization/1"),
    ("English-wiki-big", 500, "Wiki-words-500-with-normalization/1"),
    ("Universal-sentence-encoder", 512, "universal-sentence-encoder/2"),
]
PREFIX = "https://tfhub.dev/google/"
# The default set: the four word modules by their TF2 re-exports (fine-tunable), USE as printed.
DEFAULT_MODULES = (PREFIX + "nnlm-en-dim50-with-normalization/2",
                   PREFIX + "nnlm-en-dim128-with-normalization/2",
                   PREFIX + "Wiki-words-250-with-normalization/2",
                   PREFIX + "Wiki-words-500-with-normalization/2",
                   PREFIX + "universal-sentence-encoder/2")


def _space(space=ss.SearchSpace()):
  hp = keras_tuner.HyperParameters()
  ss.define_search_space(hp, space)
  return {p.name: p for p in hp.space}


def _conditions(parameter):
  return [(c.name, list(c.values)) for c in parameter.conditions]


@pytest.mark.parametrize("row,paper_name,name,kind,values", TABLE5,
                         ids=[f"row{r[0]}" for r in TABLE5])
def test_table5_row(row, paper_name, name, kind, values):
  parameter = _space(ss.SearchSpace(embedding_modules=("m1", "m2")))[name]
  config = parameter.get_config()
  if kind == "table 6":
    assert config["values"] == ["m1", "m2"]
  elif values == BOOL:
    assert type(parameter).__name__ == "Boolean", paper_name
  elif kind == SETS:
    assert type(parameter).__name__ == "Choice", paper_name
    assert len(config["values"]) == len(values)
    assert set(config["values"]) == {SPELLING.get(v, v) for v in values}, paper_name
  else:
    low, high = values
    expected_type = "Int" if isinstance(low, int) else "Float"
    assert type(parameter).__name__ == expected_type, paper_name
    assert (config["min_value"], config["max_value"], config["sampling"]) == (low, high, "linear")
    if expected_type == "Int":
      assert config["step"] == 1
  expected = [CONDITIONS[name]] if name in CONDITIONS else []
  assert _conditions(parameter) == expected, paper_name


def test_the_space_is_table5_and_the_two_settings_it_leaves_open():
  space = _space()
  assert set(space) == {name for _, _, name, _, _ in TABLE5} | set(NOT_IN_TABLE5)
  for name, value in NOT_IN_TABLE5.items():
    assert type(space[name]).__name__ == "Fixed" and space[name].value == value
  searched = _space(ss.SearchSpace(deep_optimizers=("adagrad", "lazy_adam"), batch_sizes=(128, 256)))
  assert searched["deep_optimizer"].values == ["adagrad", "lazy_adam"]
  assert searched["batch_size"].values == [128, 256] and not searched["batch_size"].conditions
  with pytest.raises(ValueError, match="deep_optimizers must be among"):
    ss.SearchSpace(deep_optimizers=("sgd",))
  with pytest.raises(ValueError, match="batch_sizes must be positive"):
    ss.SearchSpace(batch_sizes=(0,))


def test_table6_is_the_default_set():
  assert [(i, PREFIX + h) for i, _, h in TABLE6] == list(modules.PAPER_TABLE6)
  assert modules.TABLE6_MODULES == DEFAULT_MODULES
  assert _space()["embedding_module"].values == list(DEFAULT_MODULES)
  # Each substitution swaps a /1 word module for its /2 TF2 version of the same module.
  for paper, ours in zip([PREFIX + h for _, _, h in TABLE6], DEFAULT_MODULES):
    assert paper == ours or (paper[:-1] + "2" == ours and modules.TABLE6_SUBSTITUTIONS[paper] == ours)
  assert not set(modules.NON_NORMALIZED_MODULES) & set(DEFAULT_MODULES)
  assert all("with-normalization" not in h for h in modules.NON_NORMALIZED_MODULES)


def test_table6_use_is_searched_frozen_the_word_modules_both_ways():
  space = ss.SearchSpace()
  assert space.frozen_modules == (PREFIX + "universal-sentence-encoder/2",)
  assert _conditions(_space(space)["fine_tune_module"]) == [
      ("embedding_module", list(DEFAULT_MODULES[:4]))]
  use = ss.sample_config(space, 0, embedding_module=DEFAULT_MODULES[4])
  assert use.fine_tune_module is False
  word = ss.sample_config(space, 0, embedding_module=DEFAULT_MODULES[0], fine_tune_module=True)
  assert word.fine_tune_module is True
  assert ss.TrialConfig.from_hyperparameters(use.active_hyperparameters()) == use


def test_a_tf1_module_directory_is_searched_frozen(tmp_path):
  tf1 = tmp_path / "tf1"
  tf1.mkdir()
  (tf1 / "tfhub_module.pb").write_bytes(b"")
  space = ss.SearchSpace(embedding_modules=(str(tf1), "m"))
  assert space.frozen_modules == (str(tf1),)
  assert _conditions(_space(space)["fine_tune_module"]) == [("embedding_module", ["m"])]
  only_tf1 = _space(ss.SearchSpace(embedding_modules=(str(tf1),)))["fine_tune_module"]
  assert type(only_tf1).__name__ == "Fixed" and only_tf1.value is False
  with pytest.raises(ValueError, match="cannot be fine-tuned"):
    ss.SearchSpace(embedding_modules=(str(tf1),), fine_tune_choices=(True,))
  with pytest.raises(ValueError, match="not among the embedding modules"):
    ss.SearchSpace(embedding_modules=("m",), frozen_modules=("other",))


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
  for name, value in (("conv_filters", 48), ("conv_filters", 60.5), ("conv_dropout", 0.45),
                      ("deep_learning_rate", 0.002), ("wide_regularization", 1e-5)):
    with pytest.raises(ValueError, match=f"{name}={value!r} is outside"):
      ss.TrialConfig.from_hyperparameters(dict(values, **{name: value}))
  with pytest.raises(ValueError, match="unknown hyperparameters"):
    ss.TrialConfig.from_hyperparameters(dict(values, learning_rate=0.1))
  lazy = dict(values, deep_optimizer="lazy_adam", batch_size=256)  # a search that searched them
  assert ss.TrialConfig.from_hyperparameters(lazy).batch_size == 256
  del values["conv_embedding_dropout"]
  with pytest.raises(ValueError, match="conv_embedding_dropout"):
    ss.TrialConfig.from_hyperparameters(values)
