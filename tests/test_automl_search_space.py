"""Table 5 and Table 6 as keras-tuner hyperparameters, compared entry by entry with the paper.

The transcriptions below are copied from the paper's text (Houlsby et al. 2019, supplementary
material, Tables 5 and 6; the project's copy is shared/seeds/001_1aef091ebdb87f6d.txt) in its own
spelling, not from the code.
"""
import keras_tuner
import pytest

from automl_baseline import modules
from automl_baseline import search_space as ss

ACTIVATIONS = {"relu", "relu6", "leaky relu", "swish", "sigmoid", "tanh"}
LEARNING_RATES = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5}
REGULARIZATION = {0.0, 0.0001, 0.001, 0.01}
BOOL = {True, False}

# Table 5: (row, the paper's parameter name, our hyperparameter, the paper's set of values).
TABLE5 = [
    (1, "Input embedding modules", "embedding_module", "Refer to Table 6"),
    (2, "Fine-tune input embedding module", "fine_tune_module", BOOL),
    (3, "Use convolution", "use_convolution", BOOL),
    (4, "Convolution activation", "conv_activation", ACTIVATIONS),
    (5, "Convolution batch norm", "conv_batch_norm", BOOL),
    (6, "Convolution max ngram length", "conv_max_ngram", {2, 3}),
    (7, "Convolution dropout rate", "conv_dropout", {0.0, 0.1, 0.2, 0.3, 0.4}),
    (8, "Convolution number of filters", "conv_filters", {32, 64, 128}),
    (9, "Number of hidden layers", "hidden_layers", {0, 1, 2, 3, 5}),
    (10, "Hidden layers size", "hidden_size", {64, 128, 256}),
    (11, "Hidden layers activation", "hidden_activation", ACTIVATIONS),
    (12, "Hidden layers normalization", "hidden_normalization", {"none", "batch norm", "layer norm"}),
    (13, "Hidden layers dropout rate", "hidden_dropout", {0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5}),
    (14, "Deep optimizer name", "deep_optimizer", {"adagrad", "lazy adam"}),
    (15, "Lazy adam batch size", "batch_size", {128, 256}),
    (16, "Deep tower learning rate", "deep_learning_rate", LEARNING_RATES),
    (17, "Deep tower regularization weight", "deep_regularization", REGULARIZATION),
    (18, "Wide tower learning rate", "wide_learning_rate", LEARNING_RATES),
    (19, "Wide tower regularization weight", "wide_regularization", REGULARIZATION),
    (20, "Number of training samples", "training_samples", {1e5, 2e5, 5e5, 1e6, 2e6}),
]
# The paper's words for values the code spells as identifiers.
SPELLING = {"leaky relu": "leaky_relu", "batch norm": "batch", "layer norm": "layer", "lazy adam": "lazy_adam"}
# Rows the table makes meaningful only under another row's value (our reading, see the docs).
CONDITIONS = {**{name: ("use_convolution", [True]) for name in (
    "conv_activation", "conv_batch_norm", "conv_max_ngram", "conv_dropout", "conv_filters")},
              **{name: ("hidden_layers", [1, 2, 3, 5]) for name in (
                  "hidden_size", "hidden_activation", "hidden_normalization", "hidden_dropout")},
              "batch_size": ("deep_optimizer", ["lazy_adam"])}
CONV_PARAMETERS = {n for n, (parent, _) in CONDITIONS.items() if parent == "use_convolution"}
HIDDEN_PARAMETERS = {n for n, (parent, _) in CONDITIONS.items() if parent == "hidden_layers"}

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


def test_table5_has_20_rows_in_order():
  assert [r[0] for r in TABLE5] == list(range(1, 21))
  assert set(_space()) == {name for _, _, name, _ in TABLE5}


@pytest.mark.parametrize("row,paper_name,name,values", TABLE5, ids=[f"row{r[0]}" for r in TABLE5])
def test_table5_row(row, paper_name, name, values):
  parameter = _space(ss.SearchSpace(embedding_modules=("m1", "m2")))[name]
  config = parameter.get_config()
  if row == 1:
    assert config["values"] == ["m1", "m2"]
  elif values == BOOL:
    assert type(parameter).__name__ == "Boolean", paper_name
  else:
    assert type(parameter).__name__ == "Choice", paper_name
    assert len(config["values"]) == len(values)
    assert set(config["values"]) == {SPELLING.get(v, v) for v in values}, paper_name
  expected = [CONDITIONS[name]] if name in CONDITIONS else []
  assert _conditions(parameter) == expected, paper_name


def test_adagrad_trains_with_batch_128_lazy_adam_with_row_15():
  space = ss.SearchSpace(embedding_modules=("m",))
  adagrad = ss.sample_config(space, 0, deep_optimizer="adagrad", batch_size=256)
  assert adagrad.batch_size is None and adagrad.train_batch_size == ss.ADAGRAD_BATCH_SIZE == 128
  assert "batch_size" not in adagrad.active_hyperparameters()
  lazy = ss.sample_config(space, 0, deep_optimizer="lazy_adam", batch_size=256)
  assert lazy.batch_size == lazy.train_batch_size == 256
  assert lazy.active_hyperparameters()["batch_size"] == 256


def test_the_optimizer_rows_can_be_narrowed():
  only_adagrad = _space(ss.SearchSpace(deep_optimizers=("adagrad",)))
  assert type(only_adagrad["deep_optimizer"]).__name__ == "Fixed" and "batch_size" not in only_adagrad
  lazy_256 = _space(ss.SearchSpace(deep_optimizers=("lazy_adam",), batch_sizes=(256,)))["batch_size"]
  assert type(lazy_256).__name__ == "Fixed" and lazy_256.value == 256
  with pytest.raises(ValueError, match="deep_optimizers must be among"):
    ss.SearchSpace(deep_optimizers=("sgd",))
  with pytest.raises(ValueError, match="batch_sizes must be among"):
    ss.SearchSpace(batch_sizes=(64,))


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
  flat = ss.sample_config(space, 0, use_convolution=False, hidden_layers=0, deep_optimizer="adagrad")
  assert all(getattr(flat, n) is None for n in set(CONDITIONS))
  deep = ss.sample_config(space, 0, use_convolution=True, hidden_layers=5, deep_optimizer="lazy_adam")
  assert all(getattr(deep, n) is not None for n in set(CONDITIONS))
  assert set(flat.active_hyperparameters()).isdisjoint(set(CONDITIONS))


def test_keras_tuner_discovers_the_conditional_parameters():
  oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
  hypermodel = ss.SearchSpaceHyperModel(ss.SearchSpace(embedding_modules=("a", "b")))
  hp = oracle.get_space()
  hypermodel.build(hp)
  assert {p.name for p in hp.space} >= set(CONDITIONS)


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
  values = ss.sample_config(space, 0, use_convolution=True,
                            deep_optimizer="lazy_adam").active_hyperparameters()
  for name, value in (("conv_filters", 48), ("conv_filters", 64.5), ("conv_dropout", 0.45),
                      ("batch_size", 64), ("deep_learning_rate", 0.002), ("wide_regularization", 1e-5)):
    with pytest.raises(ValueError, match=f"{name}={value!r} is outside"):
      ss.TrialConfig.from_hyperparameters(dict(values, **{name: value}))
  with pytest.raises(ValueError, match="unknown hyperparameters"):
    ss.TrialConfig.from_hyperparameters(dict(values, lowercase_text=True))  # a row the paper lacks
  assert ss.TrialConfig.from_hyperparameters(dict(values, batch_size=256)).batch_size == 256
  del values["conv_filters"]
  with pytest.raises(ValueError, match="conv_filters"):
    ss.TrialConfig.from_hyperparameters(values)
