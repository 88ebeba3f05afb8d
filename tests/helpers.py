"""Helpers the test modules share (fixtures are in conftest.py)."""
import contextlib
import io
import json

from adapter_keras import cli


def last_json(capsys):
  """The --json result: the last stdout line captured so far, parsed."""
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_cli(argv):
  """(exit status, stdout, stderr) of `adapter-keras argv`, run in this process."""
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    status = cli.main(argv)
  return status, stdout.getvalue(), stderr.getvalue()
