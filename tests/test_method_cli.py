"""The command line with the methods' own flags: a sweep of a method with settings, BitFit through evaluate,
and the named adapter placements (Pfeiffer, scaled parallel) recorded in the artifact and served."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adapter_keras.artifacts import read_manifest
from adapter_keras.config import AdapterConfig
from adapter_keras.models import load_adapter
from tests.helpers import run_cli

TINY_RUN = ["--epochs", "1", "--batch-size", "16", "--max-train-examples", "32"]


@pytest.mark.parametrize("method, flags, recorded", [
    ("ia3", ["--ia3-targets", "value", "ffn"], dict(targets=["value", "ffn"])),
    ("prefix-tuning", ["--prefix-tuning-length", "2"], dict(length=2, reparameterize=False, hidden_size=512,
                                                            init_std=0.02)),
])
def test_a_sweep_takes_the_method_s_own_flags(method, flags, recorded, glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "sweep")
  status, _, stderr = run_cli(["sweep", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", method, *flags, "--learning-rates", "1e-2", "--seeds", "0",
                               "--out", out, "--save-artifacts", *TINY_RUN])
  assert status == 0, stderr
  with open(os.path.join(out, "best.json"), encoding="utf-8") as f:
    best = json.load(f)
  assert best["method"] == method and best["trials"] == 1
  (trial,) = os.listdir(os.path.join(out, "trials"))
  manifest = read_manifest(os.path.join(out, "trials", trial, "artifact"))
  assert manifest["method"] == method and manifest["method_config"] == recorded


def test_bitfit_trains_and_evaluates_from_the_command_line(glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "bitfit", "--learning-rate", "1e-2", "--out", out, *TINY_RUN])
  assert status == 0, stderr
  status, stdout, stderr = run_cli(["evaluate", "--artifact", os.path.join(out, "artifact"), "--encoder",
                                    encoder_dir, "--task", "sst2", "--data-dir", glue_dir, "--json"])
  assert status == 0, stderr
  (split,) = json.loads(stdout.strip().splitlines()[-1])["metrics"].values()
  assert 0 <= split["accuracy"] <= 1


@pytest.mark.parametrize("placement", ["pfeiffer", "scaled-parallel"])
def test_a_named_placement_trains_saves_and_serves(placement, glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--adapter-placement", placement, "--adapter-size", "4", "--learning-rate", "1e-2",
                               "--out", out, *TINY_RUN])
  assert status == 0, stderr
  artifact = os.path.join(out, "artifact")
  recorded = AdapterConfig.from_dict(read_manifest(artifact)["method_config"])
  assert recorded == AdapterConfig.named(placement, size=4) and recorded.placement_name == placement
  model = load_adapter(artifact, encoder_dir)
  assert len(model.encoder.adapters()) == 2  # one per block: after (beside) the FFN only
  texts = ["a fine film", "a dull plot"]
  served = str(tmp_path / "served")
  status, _, stderr = run_cli(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out", served])
  assert status == 0, stderr
  status, stdout, stderr = run_cli(["predict", "--model", served] + texts)
  assert status == 0, stderr
  scores = [json.loads(line)["score"] for line in stdout.strip().splitlines()]
  np.testing.assert_allclose(scores, model.predict(texts).max(axis=-1), atol=1e-5)


def test_help_names_the_placements_and_the_method_flags():
  result = subprocess.run([sys.executable, "-m", "adapter_keras", "train", "--help"], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  for text in ("pfeiffer", "scaled-parallel", "He et al. 2022", "--lora-rank", "--ia3-targets",
               "--prefix-tuning-length"):
    assert text in result.stdout, text
