"""The declared lint (pyproject.toml's [tool.ruff]) holds over the tree: `make test` checks it."""
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_ruff_finds_nothing():
  out = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_would_catch_an_unused_import(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("import os\n")
  out = subprocess.run([sys.executable, "-m", "ruff", "check", "--config", f"{REPO_ROOT}/pyproject.toml", str(bad)],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and "F401" in out.stdout
