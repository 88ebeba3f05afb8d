"""Token classification's data: CoNLL reading and its errors, sub-word alignment, long-sentence windows,
and entity-level scoring against hand-counted conlleval results (no model: fast)."""
import json
import os

import numpy as np
import pytest

from adapter_keras.tasks.tagging import (TaggedSentence, TokenTask, check_tags, label_set, read_conll, score_tags,
                                         sentences_from)
from adapter_keras.tasks.token_windows import (IGNORED, NO_WORD, TokenFeaturizer, scoring_window, token_windows,
                                               word_logits)

LABELS = ("O", "B-X", "I-X")
# "cats" -> cat ##s, "unable" -> un ##able, "cat." -> cat . (multi-piece); "\x00" (a control character) and
# "\u0301" (a lone combining mark) -> nothing, so [UNK].
WORDS = ("The", "cats", "unable", "\x00", "\u0301", "cat.", "won")
TAGS = ("O", "B-X", "I-X", "O", "B-X", "I-X", "O")


def write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def vocab_file(tiny_hf_dir):
  return os.path.join(tiny_hf_dir, "vocab.txt")


def featurizer(vocab_file, max_seq_length=32, doc_stride=2, label_all_subwords=False):
  return TokenFeaturizer(vocab_file, True, max_seq_length, LABELS, doc_stride, label_all_subwords)


# ---------------------------------------------------------------- CoNLL files


def test_read_conll_tabs_spaces_docstart_and_whitespace_lines(tmp_path):
  path = write(tmp_path / "train.conll",
               "-DOCSTART- O\n\nEU\tB-ORG\nrejects\tO\n\t\nGerman B-MISC\ncall   O\n \n\n\nPeter\tB-PER\n")
  sentences = read_conll(path)
  assert [s.words for s in sentences] == [("EU", "rejects"), ("German", "call"), ("Peter",)]
  assert [s.tags for s in sentences] == [("B-ORG", "O"), ("B-MISC", "O"), ("B-PER",)]
  assert sentences[1].lines == (6, 7) and sentences[1].source == path
  assert label_set(sentences) == ("O", "B-MISC", "B-ORG", "B-PER")  # "O" first, the others sorted


@pytest.mark.parametrize("name, text, expected", [
    ("ragged.conll", "EU\tB-ORG\nrejects\tO\textra\n", r"ragged.conll line 2: expected two columns.*got 3"),
    ("one.conll", "EU\tB-ORG\nrejects\n", r"one.conll line 2: expected two columns.*got 1"),
    ("data.csv", "text,label\nI loved it,pos\n", r"data.csv line 1: expected two columns.*CoNLL"),
    ("data.json", json.dumps({"data": [{"text": "a b", "label": "x"}]}, indent=1),
     r"data.json line 1: expected two columns"),
    ("empty.conll", "", r"empty.conll holds no sentences"),
    ("notag.conll", "EU\tB-ORG\nrejects\t \n", r"notag.conll line 2: expected two columns.*got 1"),
    ("noword.conll", "EU\tB-ORG\n\tO\n", r"noword.conll line 2: expected two columns.*got 1"),
    ("blank.conll", "\n \n\t\n-DOCSTART- O\n", r"blank.conll holds no sentences"),
])
def test_bad_files_are_one_line_errors_naming_file_and_line(tmp_path, name, text, expected):
  path = write(tmp_path / name, text)
  with pytest.raises(ValueError, match=expected) as error:
    read_conll(path, "--train")
  assert "\n" not in str(error.value)


def test_a_dev_tag_the_training_set_lacks_names_file_line_and_tag(tmp_path):
  train = read_conll(write(tmp_path / "train.conll", "a\tO\nb\tB-X\n"))
  dev_path = write(tmp_path / "dev.conll", "a\tO\n\nb\tB-X\nc\tB-Y\n")
  with pytest.raises(ValueError, match=r"dev.conll line 4: tag 'B-Y' is not in the training set's labels"):
    check_tags(read_conll(dev_path), label_set(train))
  with pytest.raises(FileNotFoundError, match="--dev nowhere.conll not found"):
    read_conll("nowhere.conll", "--dev")


def test_sentences_from_lists_and_raw_strings():
  sentences = sentences_from(["the cat  sat", ["a", "dog"]], [["O", "B-X", "O"], ["O", "B-X"]])
  assert [s.words for s in sentences] == [("the", "cat", "sat"), ("a", "dog")]
  assert sentences_from("one two")[0].words == ("one", "two")
  with pytest.raises(ValueError, match="sentence 1 has no words"):
    sentences_from(["a", "  "])
  with pytest.raises(ValueError, match="sentence 0 has 2 words but 1 tags"):
    sentences_from([["a", "b"]], [["O"]])
  with pytest.raises(ValueError, match="task name"):
    TokenTask("", LABELS)


# ---------------------------------------------------------------- alignment


def test_alignment_round_trip_with_multi_piece_and_empty_piece_words(vocab_file):
  sentence = TaggedSentence(WORDS, TAGS)
  features = featurizer(vocab_file).featurize([sentence])
  assert len(features) == 1
  ids, labels, words = features.input_word_ids[0], features.label_ids[0], features.word_index[0]
  # [CLS] the cat ##s un ##able [UNK] [UNK] cat . won [SEP]
  assert ids[:12].tolist() == [2, 5, 29, 53, 51, 52, 1, 1, 29, 61, 38, 3]
  assert features.input_mask[0].sum() == 12
  starts = np.nonzero(words != NO_WORD)[0]
  assert words[starts].tolist() == list(range(len(WORDS)))  # every word has a position, in order
  assert [LABELS[i] for i in labels[starts]] == list(TAGS)  # labels -> sub-words: the first piece's
  assert (labels[np.setdiff1d(np.arange(32), starts)] == IGNORED).all()  # the other pieces, specials, padding
  # sub-words -> words: a word's prediction is its first piece's.
  logits = np.eye(len(LABELS))[np.maximum(features.label_ids, 0)]
  tags = [[LABELS[i] for i in w.argmax(-1)] for w in word_logits(features, logits, [len(WORDS)])]
  assert tags == [list(TAGS)]


def test_label_all_subwords_continues_a_b_word_with_i(vocab_file):
  features = featurizer(vocab_file, label_all_subwords=True).featurize([TaggedSentence(WORDS, TAGS)])
  # cat(B-X) ##s(I-X) un(I-X) ##able(I-X): a B- word's later pieces carry I-, so it stays one entity.
  assert [LABELS[i] if i >= 0 else None for i in features.label_ids[0][:12]] == [
      None, "O", "B-X", "I-X", "I-X", "I-X", "O", "B-X", "I-X", "I-X", "O", None]


# ---------------------------------------------------------------- long sentences


def test_windows_and_their_max_context_rule():
  windows = token_windows(8, capacity=4, stride=2)
  assert windows == [(0, 4), (2, 4), (4, 4)]
  assert [scoring_window(p, windows) for p in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
  assert token_windows(9, capacity=4, stride=3) == [(0, 4), (3, 4), (6, 3)]
  assert token_windows(9, capacity=4, stride=10) == [(0, 4), (4, 4), (8, 1)]  # a stride past the window: none
  assert token_windows(3, capacity=4, stride=2) == [(0, 3)]                   # is skipped


def test_a_long_sentence_is_windowed_and_every_word_scored_once(vocab_file):
  words = tuple(("the cats sat on unable mat \x00 won the game ".split(" ") * 3)[:-1]) + ("\u0301",)
  tags = tuple(LABELS[i % 3] for i in range(len(words)))
  short = TaggedSentence(("a", "dog"), ("O", "B-X"))
  long_sentence = TaggedSentence(words, tags)
  f = featurizer(vocab_file, max_seq_length=8, doc_stride=3)
  features = f.featurize([short, long_sentence, short])
  assert features.example_index.tolist().count(1) > 3  # the long one is cut into windows
  assert (features.input_mask.sum(axis=1) <= 8).all()
  scored = features.scores_word & (features.example_index[:, None] == 1)
  assert sorted(features.word_index[scored].tolist()) == list(range(len(words)))  # each word exactly once
  logits = np.eye(len(LABELS))[np.maximum(features.label_ids, 0)]
  merged = word_logits(features, logits, [2, len(words), 2])
  assert [LABELS[i] for i in merged[1].argmax(-1)] == list(tags)
  assert [LABELS[i] for i in merged[2].argmax(-1)] == ["O", "B-X"]


# ---------------------------------------------------------------- scoring


def test_entity_scores_equal_conllevals_hand_counted_ones():
  gold = [["B-PER", "I-PER", "O", "B-LOC", "O"],
          ["O", "I-LOC", "I-LOC", "O", "B-PER"],  # I- after O begins an entity (conlleval's repair)
          ["B-ORG", "I-ORG", "I-PER", "O"]]       # I-PER after ORG begins a PER entity
  predicted = [["B-PER", "I-PER", "O", "B-ORG", "O"],
               ["O", "B-LOC", "I-LOC", "O", "O"],
               ["B-ORG", "I-ORG", "O", "I-PER"]]
  # conlleval by hand: gold entities PER LOC | LOC PER | ORG PER = 6; found PER ORG | LOC | ORG PER = 5;
  # correct: PER (s1), LOC (s2, "I-LOC I-LOC" == "B-LOC I-LOC" as a span), ORG (s3) = 3.
  # Tokens: 14, correct 4 + 3 + 2 = 9.
  precision, recall = 3 / 5, 3 / 6
  scores = score_tags(gold, predicted)
  assert scores == pytest.approx(dict(precision=precision, recall=recall, accuracy=9 / 14,
                                      f1=2 * precision * recall / (precision + recall)), abs=1e-12)
  with pytest.raises(ValueError, match="same sentences and lengths"):
    score_tags(gold, predicted[:2])
