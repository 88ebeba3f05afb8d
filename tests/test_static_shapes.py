"""Static shapes (a fixed batch size, a few fixed lengths) and steps_per_execution: what XLA and TPUs need,
with the same results as the dynamic mode."""
import dataclasses
import itertools
import json
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from safetensors.numpy import load_file

from adapter_keras.config import AdapterConfig
from adapter_keras.tasks import classification_task, squad
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, tiny_squad_document, write_tiny_hf_bert
from adapter_keras.train import checkpoints, classification, evaluation, inputs, loop
from adapter_keras.train import recipe as recipes
from adapter_keras.train import run as runs
from adapter_keras.train import squad as span_training
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.run import train_squad, train_task
from adapter_keras.train.squad import SquadTrainConfig, predict_answers, score_answers
from tests.helpers import run_cli
from tests.test_resume import SimulatedCrash

BATCH = 8
# Static and dynamic prediction differ only in masked padding positions; the
# logits agree to float32 rounding (measured: at most 4.5e-8 on the tiny encoders; SQuAD: 0).
LOGIT_TOLERANCE = 1e-5


def _varied_lengths(texts, seed, longest_filler):
  """Texts padded out with filler words, so that batches fall into several of the fixed lengths."""
  rng = np.random.default_rng(seed)
  return [t + " the" * int(rng.integers(0, longest_filler)) if i % 3 == 0 else t for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def task_data():
  texts, labels = tiny_sentiment_data(70, seed=0)  # 70 = 8 full batches of 8 and 6 left over
  dev_texts, dev_labels = tiny_sentiment_data(21, seed=1)  # not a multiple of the batch size
  return (classification_task("tiny", ("0", "1")), TextExamples(_varied_lengths(texts, 0, 100), labels),
          {"dev": TextExamples(_varied_lengths(dev_texts, 1, 60), dev_labels)})


@pytest.fixture(scope="module")
def static_run(encoder_dir, task_data):
  """A recipe and the model it trained for 2 epochs with static shapes (max_seq_length 128)."""
  task, train, dev = task_data
  config = TrainConfig(encoder=encoder_dir, adapter=AdapterConfig(size=4), learning_rate=3e-3, epochs=2,
                       batch_size=BATCH, static_shapes=True)
  recipe = classification.ClassificationRecipe(task, train, dev)
  strategy = tf.distribute.get_strategy()
  model = runs.build_trainable_model(config, task, strategy)
  recipe.prepare(model.preprocessor, config)
  result, _ = recipes.fit(recipe, model, config, strategy, verbose=False)
  return recipe, model, result


def _padded_positions(lengths, fixed):
  fixed = np.asarray(fixed)
  return int(fixed[np.searchsorted(fixed, lengths)].sum())


def test_static_batch_lengths_and_the_decision():
  # Without the data's lengths (training records): powers of two, then max_seq_length.
  assert inputs.static_batch_lengths(128) == (32, 64, 128)
  assert inputs.static_batch_lengths(384) == (32, 64, 128, 256, 384)
  assert inputs.static_batch_lengths(100) == (32, 64, 100)
  assert inputs.static_batch_lengths(32) == (32,)
  assert inputs.static_batch_lengths(16) == (16,)
  # From the data: at most MAX_STATIC_LENGTHS, the last the longest example (cut at max_seq_length).
  rng = np.random.default_rng(0)
  lengths = np.append(np.clip(rng.lognormal(2.4, 0.6, 5000).astype(int), 3, 100), 200)
  fixed = inputs.static_batch_lengths(128, lengths)
  assert 1 < len(fixed) <= inputs.MAX_STATIC_LENGTHS == 8 and fixed[-1] == 128
  assert list(fixed) == sorted(set(fixed))
  assert inputs.static_batch_lengths(128, [lengths[:100], lengths[100:]]) == fixed  # train and dev splits
  short = np.minimum(lengths, 60)
  assert inputs.static_batch_lengths(128, short)[-1] == 60
  # The fewest padded positions of any choice: exhaustively over 3 lengths of 6 distinct values.
  small = np.array([2, 2, 3, 5, 5, 5, 8, 9, 9, 12])
  best = min(_padded_positions(small, c + (12,)) for k in range(3)
             for c in itertools.combinations([2, 3, 5, 8, 9], k))
  chosen = inputs.static_batch_lengths(16, small, max_lengths=3)
  assert len(chosen) <= 3 and chosen[-1] == 12 and _padded_positions(small, chosen) == best
  assert inputs.static_batch_lengths(16, small, max_lengths=1) == (12,)
  assert set(inputs.static_batch_lengths(16, small, multiple=4)[:-1]) <= {4, 8}
  assert inputs.static_batch_lengths(16, np.array([7, 7, 7])) == (7,)
  with pytest.raises(ValueError, match="max_lengths must be an integer >= 1"):
    inputs.static_batch_lengths(16, small, max_lengths=0)
  default = tf.distribute.get_strategy()
  assert not inputs.uses_static_shapes(TrainConfig(), default)
  assert inputs.uses_static_shapes(TrainConfig(jit_compile=True), default)  # auto: on with XLA
  assert not inputs.uses_static_shapes(TrainConfig(jit_compile=True, static_shapes=False), default)
  assert inputs.uses_static_shapes(TrainConfig(static_shapes=True), default)


def test_static_lengths_given_in_the_config(static_run):
  recipe = static_run[0]
  data_chosen, original = recipe.static_lengths, recipe.config
  try:
    recipe.config = dataclasses.replace(original, static_lengths=[64, 128])  # as --static-lengths gives them
    assert recipe.static_lengths == (64, 128) != data_chosen
    assert {int(f["input_word_ids"].shape[1]) for f, _ in recipe.epoch_dataset(0)} <= {64, 128}
    recipe.config = dataclasses.replace(original, static_shapes=False)
    assert recipe.static_lengths is None
  finally:
    recipe.config = original
  assert TrainConfig.from_dict(TrainConfig(static_lengths=(16, 128)).to_dict()).static_lengths == (16, 128)
  for lengths, why in (((32, 16), "ascending"), ((16, 16), "ascending"), ((0, 16), r"\[1, max_seq_length 128\]"),
                       ((16, 256), "max_seq_length 128"), (tuple(range(8, 81, 8)), "1 to 8"), ((), "1 to 8")):
    with pytest.raises(ValueError, match="static_lengths must be 1 to 8 ascending integers"):
      TrainConfig(static_lengths=lengths)
  with pytest.raises(ValueError, match="static_lengths apply under static shapes"):
    TrainConfig(static_lengths=(16, 128), static_shapes=False)


def test_static_epochs_are_whole_batches_drawn_from_seed_and_epoch(static_run):
  assert inputs.steps_per_epoch(70, 8, drop_remainder=True) == 8
  assert inputs.steps_per_epoch(70, 8) == 9  # dynamic: unchanged
  with pytest.raises(ValueError, match="static shapes need at least one full batch: 5 training examples, "
                                       "batch size 8"):
    inputs.steps_per_epoch(5, 8, drop_remainder=True)
  lengths = static_run[0].train_encoded.lengths
  orders = [inputs.epoch_order(70, 0, epoch, lengths, 8, drop_remainder=True) for epoch in (0, 1)]
  for epoch, order in enumerate(orders):
    assert len(order) == 64 == len(set(order.tolist()))
    np.testing.assert_array_equal(order, inputs.epoch_order(70, 0, epoch, lengths, 8, drop_remainder=True))
  assert set(orders[0].tolist()) != set(orders[1].tolist())  # the examples left out change with the epoch


def test_static_training_runs_few_shapes_and_traces_the_train_function_once(static_run):
  recipe, model, _ = static_run
  fixed = recipe.static_lengths  # from the train and dev examples' lengths
  every = np.concatenate([recipe.train_encoded.lengths, recipe.dev_encoded["dev"].lengths])
  assert fixed == inputs.static_batch_lengths(128, every) and fixed[-1] == every.max()
  assert 2 <= len(fixed) <= inputs.MAX_STATIC_LENGTHS
  assert recipe.config.static_shapes is True and recipe.num_train_batches_per_epoch == 8
  shapes = set()
  for epoch in range(2):
    dataset = recipe.epoch_dataset(epoch)
    assert dataset.element_spec[0]["input_word_ids"].shape.as_list() == [BATCH, None]  # a static batch size
    batches = 0
    for features, labels in dataset:
      shape = tuple(features["input_word_ids"].shape)
      shapes.add(shape)
      longest = int(features["input_mask"].numpy().sum(axis=1).max())
      assert shape[1] == min(n for n in fixed if n >= longest) and labels.shape == (BATCH,)
      batches += 1
    assert batches == 8
  assert {length for _, length in shapes} <= set(fixed) and len(shapes) >= 2
  assert model.train_tf_function.experimental_get_tracing_count() <= len(fixed)
  assert int(model.optimizer.iterations) == 16


def test_static_evaluation_scores_every_dev_example_once_like_the_dynamic_mode(static_run, monkeypatch):
  recipe, model, result = static_run
  dev = recipe.dev_encoded["dev"]
  fixed = recipe.static_lengths
  shapes = []
  predict = evaluation.predict_outputs

  def recording(model, dataset):
    shapes.extend(tuple(f["input_word_ids"].shape) for f, _ in dataset)
    return predict(model, dataset)

  monkeypatch.setattr(evaluation, "predict_outputs", recording)
  static = evaluation.predict_encoded(model, dev, BATCH, static_lengths=fixed)
  assert len(shapes) == 3 and {s[0] for s in shapes} == {BATCH} and {s[1] for s in shapes} <= set(fixed)
  dynamic = evaluation.predict_encoded(model, dev, BATCH)
  assert static.shape == dynamic.shape == (21, 2)
  np.testing.assert_allclose(static, dynamic, atol=LOGIT_TOLERANCE, rtol=0)
  # Each example alone, unpadded: the same outputs, so none was dropped or scored twice.
  one_by_one = np.concatenate([model(dict(input_word_ids=dev.word_ids[i:i + 1].to_tensor(),
                                          input_mask=tf.ones_like(dev.word_ids[i:i + 1].to_tensor()),
                                          input_type_ids=dev.type_ids[i:i + 1].to_tensor())).numpy()
                               for i in range(len(dev))])
  # The model's predict gives probabilities, its call logits.
  np.testing.assert_allclose(static, tf.nn.softmax(one_by_one).numpy(), atol=LOGIT_TOLERANCE, rtol=0)
  metrics = {mode: evaluation.evaluate_model(model, recipe.task, recipe.dev_encoded, BATCH, lengths)
             for mode, lengths in (("static", fixed), ("dynamic", None))}
  assert metrics["static"] == metrics["dynamic"]
  assert metrics["static"]["dev"]["accuracy"] == result.metrics["accuracy"]  # the run evaluated statically


@pytest.fixture(scope="module")
def dropout_encoder(tmp_path_factory):
  return write_tiny_hf_bert(str(tmp_path_factory.mktemp("dropout_enc")), seed=0, dropout=0.1)


def _spe_run(dropout_encoder, task_data, out, steps_per_execution, checkpoint_every_steps):
  task, train, dev = task_data
  config = TrainConfig(encoder=dropout_encoder, adapter=AdapterConfig(size=4), learning_rate=3e-3, epochs=2,
                       batch_size=BATCH, steps_per_execution=steps_per_execution, static_shapes=True)
  return train_task(task, train, dev, config, out_dir=str(out), verbose=False,
                                   checkpoint_every_steps=checkpoint_every_steps)


def test_steps_per_execution_gives_the_same_run_and_checkpoints_resume_it(dropout_encoder, task_data, tmp_path,
                                                                          monkeypatch):
  """2 epochs of 8 steps, 3 steps per execution: batch ends at steps 3 6 8 | 11 14 16."""
  reference = tmp_path / "one-step"
  _spe_run(dropout_encoder, task_data, reference, 1, None)
  out = tmp_path / "three-steps"
  saved = []
  save, count_step = checkpoints.StepCheckpoint.save, loop._RunProgress.on_train_batch_end

  def recording_save(self, progress, *args):
    saved.append(progress["global_step"])
    return save(self, progress, *args)

  def crash_at_step_16(self, batch, logs=None):
    count_step(self, batch, logs)
    if self.global_step == 16:
      raise SimulatedCrash

  with monkeypatch.context() as m:
    m.setattr(checkpoints.StepCheckpoint, "save", recording_save)
    m.setattr(loop._RunProgress, "on_train_batch_end", crash_at_step_16)
    with pytest.raises(SimulatedCrash):
      _spe_run(dropout_encoder, task_data, out, 3, 4)
  # Every 4 steps: at the first batch end at or after 4 (6) and 12 (14); 8 is epoch 1's end.
  assert saved == [6, 8, 14]
  progress = json.loads((out / "checkpoint" / "step-14" / checkpoints.PROGRESS_FILE).read_text())
  assert (progress["epoch"], progress["step_in_epoch"]) == (1, 6)
  result, model = _spe_run(dropout_encoder, task_data, out, 3, 4)  # resumes: the last 2 steps
  assert int(model.optimizer.iterations) == 16
  runs = [json.loads((d / "metrics.json").read_text()) for d in (out, reference)]
  for run in runs:
    run.pop("seconds")
    assert run["config"].pop("steps_per_execution") == (3 if run is runs[0] else 1)
  assert runs[0] == runs[1] and len(result.history) == 2
  weights = [load_file(str(d / "artifact" / "weights.safetensors")) for d in (out, reference)]
  assert weights[0].keys() == weights[1].keys()
  for key in weights[0]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)


def test_a_nan_loss_names_the_steps_of_its_execution(encoder_dir, task_data, monkeypatch):
  def compile_with_nan_at_step_10(model, optimizer, **kwargs):
    cross_entropy = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(labels, logits):  # iterations counts the steps before this one
      return cross_entropy(labels, logits) + tf.where(tf.equal(optimizer.iterations, 9), np.nan, 0.0)

    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], **kwargs)
    return model

  monkeypatch.setattr(classification, "compile_task_model", compile_with_nan_at_step_10)
  config = TrainConfig(encoder=encoder_dir, adapter=AdapterConfig(size=4), epochs=2, batch_size=BATCH,
                       steps_per_execution=3, static_shapes=True)
  with pytest.raises(loop.NonFiniteLossError, match=r"at one of steps 9-11 of 16; .*best epoch's \(epoch 1\)"):
    train_task(*task_data, config, verbose=False)


def test_train_cli_with_static_shapes_and_steps_per_execution(encoder_dir, glue_dir, tmp_path):
  def train(batch_size, out):
    return run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir, "--adapter-size",
                    "4", "--epochs", "2", "--batch-size", str(batch_size), "--learning-rate", "1e-2",
                    "--static-shapes", "--steps-per-execution", "3", "--out", str(out), "--json"])

  out = tmp_path / "run"
  status, stdout, stderr = train(10, out)
  assert status == 0, stderr
  # 48 examples: 4 batches of 10 per epoch (8 sit out), in executions of 3 + 1 steps.
  assert re.search(r"epoch 2 step 8/8 ", stdout), stdout
  trained = json.loads(stdout.strip().splitlines()[-1])
  config = json.loads((out / "metrics.json").read_text())["config"]
  assert config["static_shapes"] is True and config["steps_per_execution"] == 3
  # The saved model, evaluated dynamically, scores what the static dev evaluation scored.
  status, stdout, stderr = run_cli(["evaluate", "--artifact", str(out), "--encoder", encoder_dir, "--task", "sst2",
                                    "--data-dir", glue_dir, "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["metrics"]["dev"] == trained["metrics"]
  # Fewer examples than one batch: refused in one line before the run directory is made.
  refused = tmp_path / "refused"
  status, _, stderr = train(64, refused)
  assert status == 2 and stderr.strip().splitlines() == [
      "error: static shapes need at least one full batch: 48 training examples, batch size 64; lower the batch "
      "size or turn static shapes off (--no-static-shapes)"]
  assert not refused.exists()


def test_squad_static_windows_train_and_score_like_the_dynamic_mode(encoder_dir):
  train = squad.parse_squad(tiny_squad_document(14, seed=0, title="train"))
  dev = squad.parse_squad(tiny_squad_document(7, seed=1, title="dev"))
  config = SquadTrainConfig(encoder=encoder_dir, adapter=AdapterConfig(size=4), learning_rate=1e-2, epochs=2,
                            batch_size=4, max_seq_length=24, doc_stride=8, max_query_length=8,
                            static_shapes=True, steps_per_execution=2)
  result, model = train_squad(train, dev, config, verbose=False)
  featurizer = model.featurizer
  train_windows, dev_windows = featurizer.featurize(train), featurizer.featurize(dev)
  assert len(train_windows) % 4 and len(dev_windows) % 4  # a partial batch to drop / to fill
  assert int(model.optimizer.iterations) == 2 * (len(train_windows) // 4)
  batches = list(span_training.make_span_dataset(train_windows, 4, order=np.arange(len(train_windows)),
                                         drop_remainder=True))
  assert len(batches) == len(train_windows) // 4
  assert {tuple(window_inputs["input_word_ids"].shape) for window_inputs, _ in batches} == {(4, 24)}
  static = span_training.predict_spans(model, dev_windows, 4, static_shapes=True)
  dynamic = span_training.predict_spans(model, dev_windows, 4)
  for a, b in zip(static, dynamic):
    assert a.shape == b.shape == (len(dev_windows), 24)
    np.testing.assert_allclose(a, b, atol=LOGIT_TOLERANCE, rtol=0)
  # The run's static dev evaluation of its best weights equals a dynamic one.
  assert result.metrics == score_answers(dev, predict_answers(model, dev, dev_windows,
                                                              config.max_answer_length, config.n_best_size))
