"""Token classification end to end on the tiny encoder: AdapterTokenClassifier (fit, predict, evaluate,
artifacts) with the adapter and LoRA methods, the masked loss, and `adapter-keras train --task-type token`,
`evaluate --json`, `sweep --task-type token`, `params --task-type token`, `export` and `predict` on tiny
generated CoNLL files; the exported SavedModel reloaded with TensorFlow and tensorflow-text only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from adapter_keras import AdapterTokenClassifier, load_adapter
from adapter_keras.artifacts import read_manifest
from adapter_keras.tasks.tagging import read_conll, score_tags, sentences_from
from adapter_keras.tasks.token_windows import word_logits
from adapter_keras.train.tagging import MaskedTokenLoss, predict_token_logits
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess

LABELS = ["O", "B-ANIMAL", "B-GROUP", "I-ANIMAL"]  # label_set's order: "O" first, the others sorted
_TAGGED = {"cat": "B-ANIMAL", "cats": "B-ANIMAL", "dog": "B-ANIMAL", "team": "B-GROUP", "band": "B-GROUP",
           "party": "B-GROUP"}
_OTHER = ["the", "sat", "on", "mat", "won", "lost", "game", "and", "music", "unable", "play", "."]


def tiny_tagged(n, seed):
  """`n` sentences of tiny-vocab words with their tags ("cats" is two sub-words, "dog dog" an I- entity)."""
  rng = np.random.default_rng(seed)
  sentences, tags = [], []
  for _ in range(n):
    words = list(rng.choice(_OTHER, size=int(rng.integers(3, 7))))
    words.insert(int(rng.integers(0, len(words))), str(rng.choice(list(_TAGGED))))
    sentence_tags = [_TAGGED.get(w, "O") for w in words]
    if rng.random() < 0.3:
      at = sentence_tags.index("B-ANIMAL") if "B-ANIMAL" in sentence_tags else None
      if at is not None:
        words.insert(at + 1, "dog")
        sentence_tags.insert(at + 1, "I-ANIMAL")
    sentences.append(words)
    tags.append(sentence_tags)
  return sentences, tags


def write_conll(path, sentences, tags, separator="\t"):
  with open(path, "w", encoding="utf-8") as f:
    f.write("-DOCSTART- O\n\n")
    for words, sentence_tags in zip(sentences, tags):
      f.write("".join(f"{w}{separator}{t}\n" for w, t in zip(words, sentence_tags)) + "\n")
  return str(path)


def test_the_masked_loss_averages_over_labelled_positions_only():
  logits = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 4)), tf.float32)
  labels = tf.constant([[-1, 2, -1], [0, -1, -1]])
  expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=[2, 0], logits=[logits[0, 1], logits[1, 0]])
  assert float(MaskedTokenLoss()(labels, logits)) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-6)


@pytest.mark.parametrize("method, method_config", [("adapter", None), ("lora", {"rank": 2})])
def test_fit_predict_evaluate_and_a_bit_identical_artifact(encoder_dir, tmp_path, method, method_config):
  sentences, tags = tiny_tagged(24, seed=0)
  dev, dev_tags = tiny_tagged(8, seed=1)
  kwargs = dict(adapter=None) if method != "adapter" else {}
  tagger = AdapterTokenClassifier.from_pretrained(encoder_dir, labels=LABELS, method=method,
                                                  method_config=method_config, max_seq_length=12, doc_stride=3,
                                                  seed=1, **kwargs)
  tagger.compile(learning_rate=1e-2)
  before = [w.numpy().copy() for w in tagger.trainable_weights]
  # Lists of words for training, raw strings (split on whitespace) for validation.
  history = tagger.fit(sentences, tags, epochs=1, batch_size=8, verbose=0,
                       validation_data=([" ".join(s) for s in dev], dev_tags))
  assert set(history.history) >= {"loss", "val_f1", "val_precision", "val_recall", "val_accuracy"}
  assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, tagger.trainable_weights))
  predicted = tagger.predict(dev + ["the cat sat"])
  assert [[word for word, _ in pairs] for pairs in predicted] == dev + [["the", "cat", "sat"]]
  assert all(tag in LABELS for pairs in predicted for _, tag in pairs)
  scores = tagger.evaluate(dev, dev_tags)
  assert scores == score_tags(dev_tags, [[tag for _, tag in pairs] for pairs in predicted[:-1]])
  assert scores["f1"] == history.history["val_f1"][-1]

  artifact = tagger.save_adapter(str(tmp_path / "artifact"))
  manifest = read_manifest(artifact)
  assert manifest["task"]["task_type"] == "token" and manifest["task"]["label_names"] == LABELS
  assert manifest["token"] == dict(doc_stride=3, label_all_subwords=False) and manifest["method"] == method
  loaded = load_adapter(artifact, encoder_dir)
  assert isinstance(loaded, AdapterTokenClassifier) and loaded.labels == tuple(LABELS)
  for a, b in zip(tagger.trainable_weights, loaded.trainable_weights):
    assert a.name == b.name and np.array_equal(a.numpy(), b.numpy())
  assert loaded.predict(dev + ["the cat sat"]) == predicted
  with pytest.raises(ValueError, match=r"sentence 0 word 1: tag 'B-PLANT' is not in the training set's labels"):
    tagger.fit([["a", "rose"]], [["O", "B-PLANT"]], verbose=0)


# One method per way of changing the encoder (adapter and LoRA are in the front-door test above): training
# pre-trained variables chosen one by one (top-k; full, layer-norm and bitfit take the same path), scaling
# wrapped projections (IA3), widening the attention (prefix tuning).
@pytest.mark.parametrize("method, settings", [("top-k", dict(top_k=1)), ("ia3", {}), ("prefix-tuning", {})])
def test_the_other_kinds_of_method_train_a_token_model_and_round_trip(encoder_dir, tmp_path, method, settings):
  sentences, tags = tiny_tagged(8, seed=4)
  tagger = AdapterTokenClassifier.from_pretrained(encoder_dir, labels=LABELS, method=method, adapter=None,
                                                  max_seq_length=12, **settings)
  tagger.compile(learning_rate=1e-2)
  before = [w.numpy().copy() for w in tagger.trainable_weights]
  tagger.fit(sentences, tags, epochs=1, batch_size=8, verbose=0)
  assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, tagger.trainable_weights))
  loaded = load_adapter(tagger.save_adapter(str(tmp_path / method)), encoder_dir)
  assert loaded.method == method and loaded.predict(sentences) == tagger.predict(sentences)


def test_the_exported_saved_model_tags_words_with_offsets_as_predict_does(encoder_dir, tmp_path):
  """Reloaded with TensorFlow and tensorflow-text only (a fresh process): the same windows, tags and
  probabilities as the model, long sentences (several windows), dropped characters and accents included."""
  tagger = AdapterTokenClassifier.from_pretrained(encoder_dir, labels=LABELS, method="lora", adapter=None,
                                                  max_seq_length=8, doc_stride=3)
  # A head with large random weights, so that the tags differ from word to word.
  tagger.head.kernel.assign(np.random.default_rng(0).normal(size=tagger.head.kernel.shape) * 3)
  texts = ["The cats  unable \x00 \u0301 cat. won the game and the band will play music", "a dog", "",
           "\u00c9cat sat on the mat"]
  out = tagger.export(str(tmp_path / "export"))
  code = (f"import json, tensorflow as tf, tensorflow_text\n"
          f"f = tf.saved_model.load({out!r}).signatures['serving_default']\n"
          f"print(json.dumps({{k: v.numpy().tolist() for k, v in f(text=tf.constant({texts!r})).items()}}, "
          f"default=lambda b: b.decode('utf-8')))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["num_words"] == [len(t.split()) for t in texts]
  sentences = [t for t in texts if t.split()]
  predicted = tagger.predict(sentences)
  assert len({tag for pairs in predicted for _, tag in pairs}) > 1
  rows = [i for i, t in enumerate(texts) if t.split()]
  for row, text, pairs in zip(rows, sentences, predicted):
    count = len(pairs)
    assert served["words"][row][:count] == [w for w, _ in pairs]
    assert served["tags"][row][:count] == [t for _, t in pairs]
    assert [text[s:e] for s, e in zip(served["start"][row][:count], served["end"][row][:count])] == text.split()
  features = tagger.featurizer.featurize(sentences_from(sentences), with_labels=False)
  logits = word_logits(features, predict_token_logits(tagger, features), [len(s.split()) for s in sentences])
  for row, word_rows in zip(rows, logits):
    probabilities = np.exp(word_rows - word_rows.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(served["score"][row][:len(word_rows)], probabilities.max(-1), atol=1e-5)


def test_a_token_task_in_the_multi_task_bank_and_its_mixed_export(encoder_dir, tmp_path):
  """A token task beside a classification task on one base: trained in place without touching the other
  (bit-identical), saved and added back as an artifact, and served by one SavedModel (its own signature beside
  the classification task's; `mixed` routes the classification task)."""
  from adapter_keras.serving.multitask import MultiTaskModel  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks import classification_task  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.tagging import TokenTask  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.config import TrainConfig  # pylint: disable=import-outside-toplevel
  bank = MultiTaskModel.from_encoder(encoder_dir)
  bank.add_task("sentiment", classification_task("sentiment", ("neg", "pos")), seed=0)
  texts = ["the movie was good", "awful plot", "great fun"]
  before = bank.predict(texts, task="sentiment")
  bank.add_task("animals", TokenTask("animals", LABELS), method="lora", method_config={"rank": 2},
                max_seq_length=12, seed=1)
  sentences, tags = tiny_tagged(16, seed=5)
  config = TrainConfig(encoder=encoder_dir, method="lora", method_config={"rank": 2}, learning_rate=1e-2, epochs=1,
                       batch_size=8, max_seq_length=12)
  result = bank.train("animals", sentences_from(sentences, tags), sentences_from(sentences[:4], tags[:4]), config,
                      verbose=False)
  assert result.primary_metric == "f1" and set(result.metrics) == {"f1", "precision", "recall", "accuracy"}
  np.testing.assert_array_equal(bank.predict(texts, task="sentiment"), before)
  tagged = bank["animals"].predict(sentences)
  saved = bank.save_task("animals", str(tmp_path / "animals"))
  bank.remove_task("animals")
  bank.add_artifact(saved)
  assert bank["animals"].predict(sentences) == tagged

  out = bank.export(str(tmp_path / "bank"))
  loaded = tf.saved_model.load(out)
  served = loaded.signatures["animals"](text=tf.constant([" ".join(s) for s in sentences]))
  assert [[t.decode() for t in row[:n]] for row, n in zip(served["tags"].numpy(), served["num_words"].numpy())] \
      == [[tag for _, tag in pairs] for pairs in tagged]
  mixed = loaded.signatures["mixed"](text=tf.constant(texts), text_b=tf.constant([""] * 3),
                                     task=tf.constant(["sentiment"] * 3))
  np.testing.assert_allclose(mixed["score"].numpy(), before.max(axis=-1), atol=1e-5)


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def conll_files(tmp_path_factory):
  directory = tmp_path_factory.mktemp("conll")
  train = write_conll(directory / "train.conll", *tiny_tagged(32, seed=2))
  dev = write_conll(directory / "dev.conll", *tiny_tagged(10, seed=3), separator=" ")
  return train, dev


def train_argv(encoder_dir, conll_files, out, *extra):
  train, dev = conll_files
  return ["train", "--task-type", "token", "--task", "animals", "--train", train, "--dev", dev, "--encoder",
          encoder_dir, "--adapter-size", "4", "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-2",
          "--max-seq-length", "12", "--doc-stride", "4", "--out", out, "--json", *extra]


def test_train_token_then_evaluate_json_and_params(encoder_dir, conll_files, tmp_path):
  out = str(tmp_path / "run")
  result = run_cli_subprocess(train_argv(encoder_dir, conll_files, out))
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["task"] == "animals" and summary["primary_metric"] == "f1"
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  assert set(metrics["metrics"]) == {"f1", "precision", "recall", "accuracy"}
  # predictions.conll is conlleval's input (word, gold, predicted): scoring it gives the reported metrics.
  with open(os.path.join(out, "predictions.conll"), encoding="utf-8") as f:
    blocks = [[line.split("\t") for line in block.splitlines()] for block in f.read().split("\n\n") if block]
  dev = read_conll(conll_files[1])
  assert [[w for w, _, _ in block] for block in blocks] == [list(s.words) for s in dev]
  gold, predicted = [[g for _, g, _ in b] for b in blocks], [[p for _, _, p in b] for b in blocks]
  assert score_tags(gold, predicted) == metrics["metrics"]
  manifest = read_manifest(os.path.join(out, "artifact"))
  assert manifest["task"]["label_names"] == LABELS  # the training file's: "O" first, the others sorted

  status, stdout, stderr = run_cli(["evaluate", "--artifact", os.path.join(out, "artifact"), "--encoder",
                                    encoder_dir, "--dev", conll_files[1], "--json"])
  assert status == 0, stderr
  evaluated = json.loads(stdout.strip().splitlines()[-1])
  assert {k: evaluated[k] for k in ("f1", "precision", "recall", "accuracy")} == metrics["metrics"]
  assert evaluated["metrics"] == metrics["metrics"]

  status, stdout, stderr = run_cli(["params", "--encoder", encoder_dir, "--task-type", "token", "--num-labels", "4",
                                    "--adapter-size", "4", "--json"])
  assert status == 0, stderr
  report = json.loads(stdout.strip().splitlines()[-1])
  assert report["head_params"] == 32 * 4 + 4  # a Dense(4) on 32-wide tokens, no pooler
  assert report["trained_params"] == manifest["trained_params"]

  exported = str(tmp_path / "export")
  status, _, stderr = run_cli(["export", "--artifact", out, "--encoder", encoder_dir, "--out", exported])
  assert status == 0, stderr
  status, stdout, stderr = run_cli(["predict", "--model", exported, "the cats  sat", "a dog"])
  assert status == 0, stderr
  lines = [json.loads(line) for line in stdout.strip().splitlines()]
  model = load_adapter(out, encoder_dir)
  for line, pairs in zip(lines, model.predict(["the cats  sat", "a dog"])):
    assert [(w["word"], w["tag"]) for w in line["words"]] == pairs
    assert [line["text"][w["start"]:w["end"]] for w in line["words"]] == line["text"].split()


def test_sweep_token(encoder_dir, conll_files, tmp_path):
  train, dev = conll_files
  out = str(tmp_path / "sweep")
  status, stdout, stderr = run_cli(["sweep", "--task-type", "token", "--task", "animals", "--train", train, "--dev",
                                    dev, "--encoder", encoder_dir, "--learning-rates", "1e-2", "3e-3", "--epochs",
                                    "1", "--adapter-sizes", "4", "--batch-size", "8", "--max-seq-length", "12",
                                    "--out", out, "--json"])
  assert status == 0, stderr
  best = json.loads(stdout.strip().splitlines()[-1])
  assert best["task"] == "animals" and best["primary_metric"] == "f1"
  trials = sorted(os.listdir(os.path.join(out, "trials")))
  assert len(trials) == 2
  with open(os.path.join(out, "trials", trials[0], "metrics.json"), encoding="utf-8") as f:
    assert set(json.load(f)["metrics"]) == {"f1", "precision", "recall", "accuracy"}


def test_bad_token_inputs_are_one_line_errors_and_write_nothing(encoder_dir, conll_files, tmp_path):
  train, dev = conll_files
  ragged = tmp_path / "ragged.conll"
  ragged.write_text("the\tO\ncat\tB-ANIMAL\textra\n", encoding="utf-8")
  unknown = tmp_path / "unknown.conll"
  unknown.write_text("the\tO\n\nrose\tB-PLANT\n", encoding="utf-8")
  csv = tmp_path / "data.csv"
  csv.write_text("text,label\nthe cat,pos\n", encoding="utf-8")
  out = tmp_path / "out"
  result = run_cli_subprocess(train_argv(encoder_dir, (train, str(ragged)), str(out)))
  assert result.returncode == 2
  assert_one_error_line(result, f"{ragged} line 2: expected two columns")
  for data, expected in (((train, str(unknown)), f"{unknown} line 3: tag 'B-PLANT' is not in the training set's"),
                         ((str(csv), dev), f"{csv} line 1: expected two columns"),
                         ((str(tmp_path / "empty.conll"), dev), "empty.conll not found")):
    status, _, stderr = run_cli(train_argv(encoder_dir, data, str(out)))
    assert status == 2 and stderr.count("\n") == 1 and expected in stderr, stderr
  status, _, stderr = run_cli(train_argv(encoder_dir, conll_files, str(out), "--pooling", "cls"))
  assert status == 2 and "--pooling does not apply to --task-type token" in stderr
  assert not out.exists()
