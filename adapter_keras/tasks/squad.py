"""SQuAD v1.1: examples, windowed features, span decoding and official scoring.

The pipeline, each step a function of the previous one's output:

  load_squad_json ──► SquadExample (id, question, context, answers)
  SquadFeaturizer ──► SquadFeatures: `[CLS] question [SEP] window [SEP]` ids
                      per context window (doc_stride apart), training
                      start/end positions (0 = [CLS] when the answer is not in
                      the window), and each token's character span in the
                      context
  SpanModel       ──► start/end logits per token (models/span_model.py)
  decode_spans    ──► n-best answer strings per question, cut from the
                      original context by character offsets
  evaluate        ──► the official v1.1 exact match and F1 (Model Garden's scorer)

Tokenization is tensorflow-text's FastBertTokenizer with the same vocabulary
and casing as `BertPreprocessor`, so the ids are the ones the encoder was
trained on; its offsets (UTF-8 bytes into the raw text, accents and case
included) are converted to character offsets here.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from adapter_keras import _model_garden
from adapter_keras.preprocessing import BertPreprocessor, read_vocab

NOT_IN_CONTEXT = -1  # character offset of tokens that are not context tokens


@dataclasses.dataclass(frozen=True)
class SquadTask:
  """What the manifest and run.json record as the task (TaskSpec's fields that apply)."""

  name: str = "squad"
  task_type: str = "span"  # models.SpanModel.task_type
  primary_metric: str = "f1"
  metrics: Tuple[str, ...] = ("exact_match", "f1")
  dev_splits: Tuple[str, ...] = ("dev",)

  def to_dict(self) -> Dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


SQUAD_TASK = SquadTask()


@dataclasses.dataclass(frozen=True)
class SquadAnswer:
  text: str
  answer_start: int  # character offset into the context


@dataclasses.dataclass(frozen=True)
class SquadExample:
  id: str
  question: str
  context: str
  answers: Tuple[SquadAnswer, ...]
  title: str = ""


def parse_squad(data: Dict, source: str = "<data>", max_examples: Optional[int] = None
                ) -> List[SquadExample]:
  """Examples from a parsed official SQuAD v1.1 JSON document, in file order."""
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise ValueError(f"{source} is not SQuAD JSON: expected an object with a 'data' list of articles")
  try:
    return _parse_articles(data["data"], source, max_examples)
  except KeyError as error:
    raise ValueError(f"{source} is not SQuAD JSON: an article, paragraph, question or answer "
                     f"lacks the field {error}") from None
  except (TypeError, AttributeError) as error:  # e.g. a list where an object belongs
    raise ValueError(f"{source} is not SQuAD JSON: a field has the wrong type ({error})") from None


def _parse_articles(articles: List, source: str, max_examples: Optional[int]) -> List[SquadExample]:
  examples: List[SquadExample] = []
  for article in articles:
    for paragraph in article.get("paragraphs", []):
      context = paragraph["context"]
      for qa in paragraph["qas"]:
        if max_examples is not None and len(examples) >= max_examples:
          return examples
        if qa.get("is_impossible"):
          raise ValueError(f"{source}: question {qa['id']} is unanswerable (SQuAD v2.0); "
                           "only SQuAD v1.1 is supported")
        answers = tuple(checked_answer(context, a["text"], int(a["answer_start"]), f"{source}: question {qa['id']}")
                        for a in qa.get("answers", []))
        examples.append(SquadExample(id=qa["id"], question=qa["question"], context=context,
                                     answers=answers, title=article.get("title", "")))
  return examples


def checked_answer(context: str, text: str, answer_start: int, where: str) -> SquadAnswer:
  """The answer, after checking that `text` is exactly the context's characters from `answer_start` (the one
  rule for train-squad's files and AdapterSpanExtractor's answers); ValueError naming `where` otherwise."""
  if not text:
    raise ValueError(f"{where}: the answer text is empty")
  if not 0 <= answer_start <= answer_start + len(text) <= len(context):
    raise ValueError(f"{where}: answer {text!r} at {answer_start} lies outside its {len(context)}-character "
                     "context")
  if context[answer_start:answer_start + len(text)] != text:
    raise ValueError(f"{where}: {text!r} is not at character {answer_start} of its context (which reads "
                     f"{context[answer_start:answer_start + len(text)]!r} there); answer_start is the offset of the "
                     "answer's first character in the context")
  return SquadAnswer(text, answer_start)


def load_squad_json(path: str, max_examples: Optional[int] = None) -> List[SquadExample]:
  """Examples from an official SQuAD v1.1 file (train-v1.1.json, dev-v1.1.json)."""
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not valid JSON: {error}") from None
  return parse_squad(data, source=path, max_examples=max_examples)


# ------------------------------------------------------------------- features


@dataclasses.dataclass
class SquadFeatures:
  """One row per (question, context window); arrays are [features, max_seq_length] or [features].

  token_char_start/end give each context token's characters in its example's
  context (NOT_IN_CONTEXT for [CLS], question, [SEP] and padding);
  token_is_max_context marks the window where a token has the most context on
  both sides, so overlapping windows do not both answer with the same token.
  """

  input_word_ids: np.ndarray
  input_mask: np.ndarray
  input_type_ids: np.ndarray
  start_positions: np.ndarray
  end_positions: np.ndarray
  example_index: np.ndarray
  token_char_start: np.ndarray
  token_char_end: np.ndarray
  token_is_max_context: np.ndarray

  def __len__(self) -> int:
    return len(self.example_index)

  def inputs(self) -> Dict[str, np.ndarray]:
    return dict(input_word_ids=self.input_word_ids, input_mask=self.input_mask,
                input_type_ids=self.input_type_ids)


def _char_offsets(text: str, byte_offsets: np.ndarray) -> np.ndarray:
  """UTF-8 byte offsets into `text` -> character offsets."""
  if text.isascii():
    return byte_offsets
  char_of_byte = np.zeros(len(text.encode("utf-8")) + 1, np.int64)
  position = 0
  for index, char in enumerate(text):
    width = len(char.encode("utf-8"))
    char_of_byte[position:position + width] = index
    position += width
  char_of_byte[position] = len(text)
  return char_of_byte[byte_offsets]


def _windows(num_tokens: int, window_size: int, stride: int) -> List[Tuple[int, int]]:
  """(start, length) of context windows: `stride` apart, the last one reaching the end."""
  windows, start = [], 0
  while True:
    length = min(num_tokens - start, window_size)
    windows.append((start, length))
    if start + length >= num_tokens:
      return windows
    start += min(length, stride)


def _is_max_context(windows: List[Tuple[int, int]], window_index: int, token: int) -> bool:
  # BERT's rule: score = min(left, right context) + 0.01 * window length.
  best_score, best_window = None, None
  for index, (start, length) in enumerate(windows):
    if not start <= token < start + length:
      continue
    score = min(token - start, start + length - 1 - token) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best_window = score, index
  return best_window == window_index


class SquadFeaturizer:
  """Examples -> SquadFeatures with BertPreprocessor's vocabulary and casing.

  Args:
    vocab_file: WordPiece vocabulary with [CLS], [SEP], [PAD].
    lower_case: lower-case and strip accents (uncased vocabularies).
    max_seq_length: packed length, special tokens included; every feature is
      padded to it.
    doc_stride: tokens between the starts of consecutive context windows.
    max_query_length: question tokens kept (the rest are cut).
  """

  def __init__(self, vocab_file: str, lower_case: bool = True, max_seq_length: int = 384,
               doc_stride: int = 128, max_query_length: int = 64):
    if doc_stride < 1 or max_query_length < 1:
      raise ValueError(f"doc_stride and max_query_length must be >= 1, got {doc_stride}, {max_query_length}")
    if max_seq_length < 5:
      raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
    vocab = read_vocab(vocab_file)
    for token in ("[CLS]", "[SEP]", "[PAD]"):
      if token not in vocab:
        raise ValueError(f"vocabulary {vocab_file} lacks {token}")
    self.cls_id, self.sep_id, self.pad_id = (vocab.index(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    self.max_seq_length = max_seq_length
    self.doc_stride = doc_stride
    self.max_query_length = max_query_length
    self._tokenizer = tf_text.FastBertTokenizer(
        vocab=vocab, lower_case_nfd_strip_accents=lower_case, token_out_type=tf.int32)

  @classmethod
  def from_preprocessor(cls, preprocessor: BertPreprocessor, doc_stride: int = 128,
                        max_query_length: int = 64) -> "SquadFeaturizer":
    """A featurizer with the preprocessor's vocabulary, casing and max_seq_length."""
    return cls(preprocessor.vocab_file, preprocessor.lower_case, preprocessor.max_seq_length,
               doc_stride, max_query_length)

  def tokenize_with_offsets(self, texts: Sequence[str]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, char starts, char ends) per text; [start, end) covers the token's characters."""
    if not texts:
      return []
    ids, starts, ends = self._tokenizer.tokenize_with_offsets(tf.constant(list(texts), tf.string))
    return [(i, _char_offsets(t, s), _char_offsets(t, e))
            for t, i, s, e in zip(texts, ids.numpy(), starts.numpy(), ends.numpy())]

  def featurize(self, examples: Sequence[SquadExample]) -> SquadFeatures:
    """Windows every example; positions come from its first answer (0/0 if none)."""
    contexts = sorted({e.context for e in examples})
    context_tokens = dict(zip(contexts, self.tokenize_with_offsets(contexts)))
    question_ids = [q[0] for q in self.tokenize_with_offsets([e.question for e in examples])]
    rows = collections.defaultdict(list)
    for example_index, example in enumerate(examples):
      query = question_ids[example_index][:self.max_query_length]
      doc_ids, doc_starts, doc_ends = context_tokens[example.context]
      answer_tokens = self._answer_tokens(example, doc_starts, doc_ends)
      offset = len(query) + 2  # [CLS] question [SEP]
      window_size = self.max_seq_length - len(query) - 3
      if window_size < 1:
        raise ValueError(
            f"question {example.id}: max_seq_length {self.max_seq_length} leaves no room for context "
            f"after its {len(query)} question tokens; lower max_query_length below "
            f"{self.max_seq_length - 3}")
      windows = _windows(len(doc_ids), window_size, self.doc_stride)
      for window_index, (start, length) in enumerate(windows):
        ids = np.full(self.max_seq_length, self.pad_id, np.int32)
        ids[:offset + length + 1] = np.concatenate(
            [[self.cls_id], query, [self.sep_id], doc_ids[start:start + length], [self.sep_id]])
        type_ids = np.zeros(self.max_seq_length, np.int32)
        type_ids[offset:offset + length + 1] = 1
        char_start = np.full(self.max_seq_length, NOT_IN_CONTEXT, np.int32)
        char_end = np.full(self.max_seq_length, NOT_IN_CONTEXT, np.int32)
        char_start[offset:offset + length] = doc_starts[start:start + length]
        char_end[offset:offset + length] = doc_ends[start:start + length]
        max_context = np.zeros(self.max_seq_length, bool)
        for i in range(length):
          max_context[offset + i] = _is_max_context(windows, window_index, start + i)
        start_position = end_position = 0
        if answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < start + length:
          start_position, end_position = (offset + t - start for t in answer_tokens)
        for key, value in (("input_word_ids", ids), ("input_type_ids", type_ids),
                           ("input_mask", (np.arange(self.max_seq_length) < offset + length + 1)),
                           ("start_positions", start_position), ("end_positions", end_position),
                           ("example_index", example_index), ("token_char_start", char_start),
                           ("token_char_end", char_end), ("token_is_max_context", max_context)):
          rows[key].append(value)
    if not rows:
      raise ValueError("no SQuAD examples to featurize")
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    for key in ("input_word_ids", "input_type_ids", "input_mask", "start_positions",
                "end_positions", "example_index"):
      arrays[key] = arrays[key].astype(np.int32)
    return SquadFeatures(**arrays)

  @staticmethod
  def _answer_tokens(example: SquadExample, starts: np.ndarray, ends: np.ndarray
                     ) -> Optional[Tuple[int, int]]:
    """First and last context token overlapping the first answer's characters."""
    if not example.answers:
      return None
    answer = example.answers[0]
    answer_end = answer.answer_start + len(answer.text)
    overlapping = np.nonzero((ends > answer.answer_start) & (starts < answer_end))[0]
    if len(overlapping) == 0:  # an answer of only whitespace or dropped characters
      return None
    return int(overlapping[0]), int(overlapping[-1])


# ------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class SpanCandidate:
  text: str
  score: float         # start logit + end logit
  probability: float   # softmax of the scores over the example's n-best list
  start_char: int
  end_char: int


def decode_spans(examples: Sequence[SquadExample], features: SquadFeatures,
                 start_logits: np.ndarray, end_logits: np.ndarray, n_best_size: int = 20,
                 max_answer_length: int = 30) -> Dict[str, List[SpanCandidate]]:
  """The n best distinct answer strings per question id, best first.

  A span is valid when both ends are context tokens of the same window,
  start <= end, it is at most `max_answer_length` tokens long and the start
  token is in its max-context window. Questions without a valid span get [].
  """
  start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
  if start_logits.shape != features.input_word_ids.shape or end_logits.shape != start_logits.shape:
    raise ValueError(f"logits of shape {start_logits.shape} / {end_logits.shape} do not match "
                     f"features {features.input_word_ids.shape}")
  by_example = collections.defaultdict(list)
  for feature_index, example_index in enumerate(features.example_index):
    by_example[int(example_index)].append(feature_index)
  results: Dict[str, List[SpanCandidate]] = {}
  for example_index, example in enumerate(examples):
    spans = []  # (score, start_char, end_char)
    for f in by_example.get(example_index, []):
      starts = features.token_char_start[f]
      ends = features.token_char_end[f]
      top_starts = np.argsort(-start_logits[f], kind="stable")[:n_best_size]
      top_ends = np.argsort(-end_logits[f], kind="stable")[:n_best_size]
      for s in top_starts:
        if starts[s] == NOT_IN_CONTEXT or not features.token_is_max_context[f, s]:
          continue
        for e in top_ends:
          if ends[e] == NOT_IN_CONTEXT or e < s or e - s + 1 > max_answer_length:
            continue
          spans.append((float(start_logits[f, s] + end_logits[f, e]), int(starts[s]), int(ends[e])))
    spans.sort(key=lambda span: -span[0])
    best, seen = [], set()
    for score, start_char, end_char in spans:
      text = example.context[start_char:end_char]
      if text in seen:
        continue
      seen.add(text)
      best.append((text, score, start_char, end_char))
      if len(best) == n_best_size:
        break
    probabilities = _softmax(np.asarray([b[1] for b in best])) if best else []
    results[example.id] = [SpanCandidate(text, score, float(p), start_char, end_char)
                           for (text, score, start_char, end_char), p in zip(best, probabilities)]
  return results


def _softmax(scores: np.ndarray) -> np.ndarray:
  exp = np.exp(scores - scores.max())
  return exp / exp.sum()


def best_answers(candidates: Dict[str, List[SpanCandidate]]) -> Dict[str, str]:
  """Question id -> best answer text ("" when no valid span was found)."""
  return {qid: spans[0].text if spans else "" for qid, spans in candidates.items()}


# -------------------------------------------------------------------- scoring
# Model Garden's copy of the official evaluate-v1.1.py (official/nlp/tools/squad_evaluate_v1_1.py).


def normalize_answer(text: str) -> str:
  """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
  return _model_garden.squad_normalize_answer(text)


def f1_score(prediction: str, ground_truth: str) -> float:
  return _model_garden.squad_f1_score(prediction, ground_truth)


def exact_match_score(prediction: str, ground_truth: str) -> float:
  return _model_garden.squad_exact_match_score(prediction, ground_truth)


def evaluate(examples: Sequence[SquadExample], predictions: Dict[str, str]) -> Dict[str, float]:
  """Official v1.1 {"exact_match", "f1"} in percent: max over each question's ground truths.

  Questions missing from `predictions` score 0, as in the official script.
  """
  from official.nlp.tools import squad_evaluate_v1_1  # pylint: disable=import-outside-toplevel
  if not examples:
    raise ValueError("no examples to evaluate")
  for example in examples:
    if not example.answers:
      raise ValueError(f"question {example.id} has no ground-truth answers to score against")
  dataset = [{"paragraphs": [{"qas": [{"id": e.id, "answers": [{"text": a.text} for a in e.answers]}
                                      for e in examples]}]}]
  scores = squad_evaluate_v1_1.evaluate(dataset, dict(predictions))  # fractions, F1 as "final_f1"
  return {"exact_match": 100.0 * scores["exact_match"], "f1": 100.0 * scores["final_f1"]}
