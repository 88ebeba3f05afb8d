"""In-graph tokenization: ids, pairs, type ids, truncation, padding."""
import numpy as np
import pytest
import tensorflow as tf

from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.testing import tiny_vocab

VOCAB = tiny_vocab()


def ids(*tokens):
  return [VOCAB.index(t) for t in tokens]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n")
  return str(path)


def test_single_sentences_lowercase_wordpiece_and_dynamic_padding(vocab_file):
  pre = BertPreprocessor(vocab_file, lower_case=True, max_seq_length=16)
  out = pre(tf.constant(["The Movie was UNABLE!", "cat"]))
  np.testing.assert_array_equal(out["input_word_ids"].numpy(), [
      ids("[CLS]", "the", "movie", "was", "un", "##able", "!", "[SEP]"),
      ids("[CLS]", "cat", "[SEP]") + [0] * 5,
  ])
  np.testing.assert_array_equal(out["input_mask"].numpy(), [[1] * 8, [1] * 3 + [0] * 5])
  np.testing.assert_array_equal(out["input_type_ids"].numpy(), np.zeros((2, 8)))


def test_pairs_pack_cls_a_sep_b_sep_with_type_ids(vocab_file):
  pre = BertPreprocessor(vocab_file, max_seq_length=16)
  out = pre({"text": tf.constant(["the cat sat"]), "text_b": tf.constant(["a dog"])})
  np.testing.assert_array_equal(
      out["input_word_ids"].numpy()[0],
      ids("[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "[SEP]"))
  np.testing.assert_array_equal(out["input_type_ids"].numpy()[0], [0, 0, 0, 0, 0, 1, 1, 1])
  same = pre([tf.constant(["the cat sat"]), tf.constant(["a dog"])])
  np.testing.assert_array_equal(same["input_word_ids"].numpy(), out["input_word_ids"].numpy())


def test_unknown_words_map_to_unk(vocab_file):
  pre = BertPreprocessor(vocab_file, max_seq_length=8)
  out = pre(tf.constant(["zebra"]))
  np.testing.assert_array_equal(out["input_word_ids"].numpy()[0], ids("[CLS]", "[UNK]", "[SEP]"))


def test_truncation_respects_max_length_for_singles_and_pairs(vocab_file):
  pre = BertPreprocessor(vocab_file, max_seq_length=7)
  single = pre(tf.constant(["the cat sat on the mat and the dog sat"]))
  np.testing.assert_array_equal(single["input_word_ids"].numpy()[0],
                                ids("[CLS]", "the", "cat", "sat", "on", "the", "[SEP]"))
  pair = pre([tf.constant(["the cat sat on the mat"]), tf.constant(["a dog won"])])
  np.testing.assert_array_equal(pair["input_word_ids"].numpy()[0],
                                ids("[CLS]", "the", "cat", "[SEP]", "a", "dog", "[SEP]"))
  np.testing.assert_array_equal(pair["input_type_ids"].numpy()[0], [0, 0, 0, 0, 1, 1, 1])


def test_pad_to_max_length_gives_static_shape(vocab_file):
  pre = BertPreprocessor(vocab_file, max_seq_length=10, pad_to_max_length=True)
  out = pre(tf.constant(["cat", "the dog"]))
  assert out["input_word_ids"].shape == (2, 10)
  assert out["input_mask"].numpy().sum() == 3 + 4


def test_config_round_trip_and_bad_arguments(vocab_file, tmp_path):
  pre = BertPreprocessor(vocab_file, lower_case=False, max_seq_length=12)
  clone = BertPreprocessor.from_config(pre.get_config())
  assert clone.get_config() == pre.get_config()
  with pytest.raises(ValueError, match="max_seq_length"):
    BertPreprocessor(vocab_file, max_seq_length=2)
  bad = tmp_path / "bad_vocab.txt"
  bad.write_text("a\nb\n")
  with pytest.raises(ValueError, match="special tokens"):
    BertPreprocessor(str(bad))
