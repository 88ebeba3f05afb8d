"""Artifacts written by adapter_keras 0.1.0 (tests/fixtures/artifacts_v0_1_0) load with today's code
and compute what they computed then."""
import json
import os

import numpy as np
import pytest

from adapter_keras.artifacts import read_manifest
from adapter_keras.models import load_adapter
from adapter_keras.models.span_extractor import evaluate_squad_artifact
from adapter_keras.train import squad as squad_training
from tests.conftest import REPO_ROOT

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "artifacts_v0_1_0")
with open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8") as f:
  EXPECTED = json.load(f)


@pytest.mark.parametrize("name", ["sst2_adapter", "stsb_layer_norm", "rte_top_k"])
def test_task_artifacts_of_0_1_0_reproduce_their_outputs(name, tiny_hf_dir):
  expected = EXPECTED["outputs"][name]
  model = load_adapter(os.path.join(FIXTURES, name), tiny_hf_dir)
  manifest = read_manifest(os.path.join(FIXTURES, name))
  assert manifest["format_version"] == 1 and manifest["library_version"] == "0.1.0"
  segments = [np.array(expected["text"])] + ([np.array(expected["text_b"])] if expected["text_b"] else [])
  np.testing.assert_allclose(model(model.preprocessor(segments)).numpy(), expected["outputs"], atol=1e-5)


def test_squad_artifact_of_0_1_0_reproduces_its_answers_and_scores(tiny_hf_dir):
  expected = EXPECTED["outputs"]["squad_adapter"]
  dev = squad_training.read_squad_file(os.path.join(FIXTURES, "squad_dev.json"))
  metrics, answers = evaluate_squad_artifact(os.path.join(FIXTURES, "squad_adapter"), dev, tiny_hf_dir)
  assert answers == expected["answers"]
  assert metrics == pytest.approx(expected["metrics"])


def test_the_fixtures_are_what_the_readme_says(tiny_hf_dir):
  methods = {name: read_manifest(os.path.join(FIXTURES, name))["method"]
             for name in ("sst2_adapter", "stsb_layer_norm", "rte_top_k", "squad_adapter")}
  assert methods == {"sst2_adapter": "adapter", "stsb_layer_norm": "layer-norm", "rte_top_k": "top-k",
                     "squad_adapter": "adapter"}
