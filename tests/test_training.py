"""Optimizer schedule, input pipeline and training with model.fit."""
import numpy as np
import pytest

from adapter_keras.config import AdapterConfig
from adapter_keras.methods import apply_method
from adapter_keras.networks import TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks.data import TextExamples, train_test_split
from adapter_keras.testing import tiny_sentiment_data
from adapter_keras.train import evaluation, inputs, optim
from adapter_keras.train.classification import compile_task_model
from adapter_keras.train.loop import seed_everything


def test_schedule_warms_up_linearly_then_decays_to_zero():
  schedule = optim.WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
  lr = np.array([float(schedule(s)) for s in range(101)])
  np.testing.assert_allclose(lr[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-6)
  assert lr.argmax() in (9, 10) and lr.max() == pytest.approx(1e-3)
  assert np.all(np.diff(lr[10:]) < 0)
  assert lr[100] == 0.0
  np.testing.assert_allclose(lr[55], 1e-3 * 45 / 90, rtol=1e-6)
  optimizer = optim.create_optimizer(2e-5, total_steps=50)
  assert optimizer.get_config()["learning_rate"]["config"]["warmup_steps"] == 5


def test_schedule_rejects_bad_values():
  with pytest.raises(ValueError):
    optim.WarmupLinearDecay(0.0, 10, 1)
  with pytest.raises(ValueError):
    optim.WarmupLinearDecay(1e-3, 0, 0)


@pytest.fixture(scope="module")
def preprocessor(tiny_hf_dir):
  return BertPreprocessor(f"{tiny_hf_dir}/vocab.txt", max_seq_length=16)


def test_dataset_pads_each_batch_to_its_longest_example_and_loses_nothing(preprocessor):
  texts = ["cat", "the cat sat on the mat", "a dog", "good", "the movie was very good and fun"]
  examples = TextExamples(texts, np.arange(5))
  encoded = inputs.encode_examples(preprocessor, examples, chunk_size=2)
  batches = list(inputs.make_dataset(encoded, batch_size=2))
  seen = []
  for features, labels in batches:
    mask = features["input_mask"].numpy()
    word_ids = features["input_word_ids"].numpy()
    assert mask.shape[1] == mask.sum(axis=1).max()  # padded to this batch's longest
    assert np.all(word_ids[mask == 0] == 0)
    assert np.all(word_ids[:, 0] == preprocessor.cls_id)
    seen.extend(labels.numpy().tolist())
  assert seen == [0, 1, 2, 3, 4]
  shuffled = [l for _, ls in inputs.make_dataset(encoded, 2, shuffle=True, seed=1) for l in ls.numpy()]
  assert sorted(shuffled) == [0, 1, 2, 3, 4]
  again = [l for _, ls in inputs.make_dataset(encoded, 2, shuffle=True, seed=1) for l in ls.numpy()]
  assert shuffled == again


def test_split_is_seeded_and_disjoint():
  examples = TextExamples([str(i) for i in range(100)], np.arange(100))
  train, test = train_test_split(examples, 0.1, seed=5)
  assert len(train) == 90 and len(test) == 10
  assert set(train.text).isdisjoint(test.text)
  assert train_test_split(examples, 0.1, seed=5)[1].text == test.text
  assert train_test_split(examples, 0.1, seed=6)[1].text != test.text


def _frozen_snapshot(model):
  trainable = {id(v) for v in model.trainable_variables}
  return {v.name: v.numpy().copy() for v in model.variables if id(v) not in trainable}


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_adapters_alone_overfit_a_tiny_dataset_and_frozen_weights_stay_bit_identical(
    encoder_dir, preprocessor, pooling):
  seed_everything(0)
  loaded = load_encoder(encoder_dir, AdapterConfig(size=8, init_std=1e-2), adapter_seed=0)
  model = TaskModel(loaded.encoder, 2, pooling=pooling, dropout_rate=0.0).build_with_dummy_inputs()
  apply_method(model, "adapter")
  texts, labels = tiny_sentiment_data(32, seed=0)
  encoded = inputs.encode_examples(preprocessor, TextExamples(texts, labels))
  frozen_before = _frozen_snapshot(model)
  trainable_before = [v.numpy().copy() for v in model.trainable_variables]
  epochs, batch = 40, 8
  steps = inputs.steps_per_epoch(len(encoded), batch)
  compile_task_model(model, optim.create_optimizer(1e-2, steps * epochs))
  history = model.fit(inputs.make_dataset(encoded, batch, shuffle=True, seed=0),
                      epochs=epochs, verbose=0)
  assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
  assert evaluation.accuracy(model, encoded) == 1.0
  for name, value in _frozen_snapshot(model).items():
    np.testing.assert_array_equal(value, frozen_before[name], err_msg=name)
  assert all(not np.array_equal(a, v.numpy()) for a, v in zip(trainable_before, model.trainable_variables))


def test_regression_model_trains(encoder_dir, preprocessor):
  seed_everything(1)
  loaded = load_encoder(encoder_dir, AdapterConfig(size=4))
  model = TaskModel(loaded.encoder, 1, task_type="regression", pooling="mean",
                    dropout_rate=0.0).build_with_dummy_inputs()
  apply_method(model, "adapter")
  texts, labels = tiny_sentiment_data(32, seed=1)
  encoded = inputs.encode_examples(preprocessor, TextExamples(texts, labels.astype(np.float32) * 5))
  assert encoded.labels.dtype.kind == "f"
  compile_task_model(model, optim.create_optimizer(3e-2, 240))
  history = model.fit(inputs.make_dataset(encoded, 8, shuffle=True), epochs=60, verbose=0)
  # Predicting the mean label scores 6.25; learning the sentiment word scores ~0.
  assert history.history["loss"][-1] < 1.0
  assert evaluation.predict_outputs(model, inputs.make_dataset(encoded, 8)).shape == (32, 1)


def test_encode_rejects_empty_sets(preprocessor):
  with pytest.raises(ValueError, match="empty"):
    inputs.encode_examples(preprocessor, TextExamples([], np.zeros(0)))


def _bucketed_data(preprocessor, n=200):
  texts, _ = tiny_sentiment_data(n, seed=3)
  texts = [t + " and the cat sat on the mat" * (i % 4) for i, t in enumerate(texts)]
  return inputs.encode_examples(preprocessor, TextExamples(texts, np.arange(n)))


def _one_pass(dataset, encoded):
  """Example indices in batch order and padded positions of one pass; checks every row's ids and mask."""
  lengths = encoded.lengths
  seen, padded_total = [], 0
  for features, index in dataset:
    mask = features["input_mask"].numpy()
    word_ids = features["input_word_ids"].numpy()
    for row, i in enumerate(index.numpy()):
      n = lengths[i]
      assert mask[row, :n].all() and not mask[row, n:].any()
      np.testing.assert_array_equal(word_ids[row, :n], encoded.word_ids[i].numpy())
    padded_total += mask.size
    seen.append(index.numpy().tolist())
  return seen, padded_total


def test_length_bucketing_keeps_every_example_once_with_right_masks(preprocessor):
  encoded = _bucketed_data(preprocessor)
  dataset = inputs.make_dataset(encoded, 16, shuffle=True, seed=2, bucket_by_length=True)
  first, padded_total = _one_pass(dataset, encoded)
  assert sorted(sum(first, [])) == list(range(200))
  assert [len(b) for b in first] == [16] * 12 + [8]  # one partial batch, last
  _, plain_total = _one_pass(inputs.make_dataset(encoded, 16, shuffle=True, seed=2), encoded)
  real = int(encoded.lengths.sum())
  assert padded_total - real < 0.25 * (plain_total - real)  # padding positions
  # Each pass (each epoch of fit) draws a new grouped order; the same seed, the same sequence of passes.
  second, _ = _one_pass(dataset, encoded)
  assert sorted(sum(second, [])) == list(range(200)) and second != first
  again = inputs.make_dataset(encoded, 16, shuffle=True, seed=2, bucket_by_length=True)
  assert _one_pass(again, encoded)[0] == first


@pytest.mark.parametrize("n,batch_size,group_batches", [(200, 16, 50), (200, 16, 3), (37, 8, 2), (5, 8, 2)])
def test_length_grouped_order_makes_batches_of_similar_length_from_windows(n, batch_size, group_batches):
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 60, n)
  order = rng.permutation(n)
  grouped = inputs.length_grouped_order(order, lengths, batch_size, np.random.default_rng(1), group_batches)
  assert sorted(grouped.tolist()) == list(range(n))
  batches = [grouped[i:i + batch_size] for i in range(0, n, batch_size)]
  assert all(len(b) == batch_size for b in batches[:-1])
  window = batch_size * group_batches
  window_of = {int(i): position // window for position, i in enumerate(order)}
  for batch in batches:
    assert len({window_of[int(i)] for i in batch}) == 1  # a batch never mixes windows
    # ...and holds a run of consecutive lengths of its window's sorted order
    members = order[window * window_of[int(batch[0])]:][:window]
    ranked = sorted(lengths[members])
    assert sorted(lengths[batch]) in [ranked[k:k + len(batch)] for k in range(len(ranked))]
  padded = sum(len(b) * lengths[b].max() for b in batches)
  random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(order, len(batches)))
  assert padded <= random_padded
