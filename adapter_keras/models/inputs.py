"""Raw inputs of the task models: strings, (texts, texts_b) pairs, (questions, contexts), tf.data datasets of
them, labels and SQuAD answers, read into plain Python lists once per fit/evaluate/predict call."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.tasks.squad import SquadAnswer, checked_answer


def is_text_input(x) -> bool:
  """Whether `x` holds raw strings (which this module tokenizes) rather than encoder features
  (dicts of ids, which go to Keras unchanged, so that train/evaluation.py's helpers keep working)."""
  if isinstance(x, tf.data.Dataset):
    spec = x.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return not isinstance(first, dict)
  return not isinstance(x, dict)


def strings(values) -> List[str]:
  values = np.asarray(values, dtype=object).reshape(-1)
  texts = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
  for text in texts:
    if not isinstance(text, str):
      raise TypeError(f"texts must be strings, got {type(text).__name__} {text!r}")
  return texts


def is_pair_input(x) -> bool:
  # A tuple of two sequences is (texts, texts_b); a tuple of strings is just texts.
  return (isinstance(x, tuple) and len(x) == 2
          and all(not isinstance(part, (str, bytes)) and hasattr(part, "__len__") for part in x))


def split_texts(x):
  """(texts, texts_b or None) of a list, a (texts, texts_b) pair, or one string."""
  if isinstance(x, (str, bytes)):
    return strings([x]), None
  if is_pair_input(x):
    return strings(x[0]), strings(x[1])
  return strings(x), None


def dataset_columns(dataset: tf.data.Dataset, with_labels: bool):
  """(texts, texts_b, labels) of a dataset of strings, batched or not, read once (fit tokenizes every
  example once). With labels (fit, evaluate) its elements are (text, label) or ((text, text_b), label);
  without (predict) text or (text, text_b), and a numeric second part is a label, left out."""
  spec = dataset.element_spec
  is_two = isinstance(spec, tuple) and len(spec) == 2
  if with_labels and not is_two:
    raise ValueError("a dataset to train or evaluate on holds (text, label) or ((text, text_b), label) elements")
  has_labels = is_two and (with_labels or isinstance(spec[0], tuple) or spec[1].dtype != tf.string)
  texts, texts_b, labels = [], [], []
  for element in dataset.as_numpy_iterator():
    x, y = element if has_labels else (element, None)
    if isinstance(x, tuple):
      texts += strings(x[0])
      texts_b += strings(x[1])
    else:
      texts += strings(x)
    if y is not None:
      labels += np.asarray(y).reshape(-1).tolist()
  return texts, (texts_b or None), (labels if has_labels else None)

def squad_answers(answer, context: str, index: int) -> Tuple[SquadAnswer, ...]:
  """One question's answers: {"text", "answer_start"}, a list of such dicts (SQuAD dev has several), or
  the Hugging Face `squad` form {"text": [...], "answer_start": [...]}; each checked against its context."""
  if isinstance(answer, dict):
    texts, starts = answer.get("text"), answer.get("answer_start")
    if isinstance(texts, (str, bytes)):
      answer = [dict(text=texts, answer_start=starts)]
    elif texts is not None and starts is not None and hasattr(texts, "__len__") and hasattr(starts, "__len__"):
      answer = [dict(text=t, answer_start=s) for t, s in zip(texts, starts)]
  if not isinstance(answer, (list, tuple)) or not all(isinstance(a, dict) for a in answer):
    raise ValueError(f"answer {index} must be a dict {{'text': str, 'answer_start': int}} or a list of such "
                     f"dicts, got {type(answer).__name__}")
  answers = []
  for a in answer:
    if set(a) != {"text", "answer_start"}:
      raise ValueError(f"answer {index} must have exactly the keys 'text' and 'answer_start', got {sorted(a)}")
    text = a["text"].decode("utf-8") if isinstance(a["text"], bytes) else a["text"]
    start = a["answer_start"]
    if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, (int, np.integer)):
      raise ValueError(f"answer {index}: 'text' must be a string and 'answer_start' an integer, got "
                       f"{a['text']!r} and {start!r}")
    answers.append(checked_answer(context, text, int(start), f"answer {index}"))
  return tuple(answers)


def span_dataset_columns(dataset: tf.data.Dataset, with_answers: bool):
  """(questions, contexts, answers or None) of a dataset of ((question, context), answer) elements, or
  of (question, context) elements for predict; batched or not, read once."""
  spec = dataset.element_spec
  has_answers = isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple)
  if not (has_answers or (isinstance(spec, tuple) and len(spec) == 2)) or (with_answers and not has_answers):
    raise ValueError("a dataset for AdapterSpanExtractor holds ((question, context), answer) elements, the "
                     "answer a {'text', 'answer_start'} dict (predict also takes (question, context))")
  questions, contexts, answers = [], [], []
  for element in dataset.as_numpy_iterator():
    (question, context), answer = element if has_answers else (element, None)
    questions += strings(question)
    contexts += strings(context)
    if with_answers:
      if not isinstance(answer, dict):
        raise ValueError("a dataset's answers must be {'text', 'answer_start'} dicts")
      starts = np.asarray(answer.get("answer_start")).reshape(-1).tolist()
      answers += [dict(text=t, answer_start=s) for t, s in zip(strings(answer.get("text")), starts)]
  return questions, contexts, (answers if with_answers else None)
