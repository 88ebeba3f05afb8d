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
