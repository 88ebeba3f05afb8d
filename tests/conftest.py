"""Shared fixtures: tiny generated BERT directories and models."""
import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from adapter_keras import testing  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "glue")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
  """A 2-layer, hidden-32 random BERT in Hugging Face format."""
  return testing.write_tiny_hf_bert(str(tmp_path_factory.mktemp("tiny_bert")), seed=0)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
  """A 2-layer, hidden-32 random BERT without dropout (deterministic outputs in training mode)."""
  return testing.write_tiny_hf_bert(str(tmp_path_factory.mktemp("enc")), seed=0, dropout=0.0)


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
  """Tiny SST-2, RTE and STS-B in the GLUE layout (48 train / 16 dev examples each)."""
  return testing.write_tiny_glue_dir(str(tmp_path_factory.mktemp("glue")))


@pytest.fixture(scope="session")
def tiny_mean_pooling_dir(tmp_path_factory):
  """Like tiny_hf_dir, marked as a sentence-transformers (mean-pooling) model."""
  return testing.write_tiny_hf_bert(str(tmp_path_factory.mktemp("tiny_st")), seed=1,
                                    sentence_transformers_mean_pooling=True)


def minilm_dir():
  """The installed all-MiniLM-L6-v2 directory, or None."""
  try:
    from adapter_keras.pretrained import resolve_named_encoder
    return resolve_named_encoder("minilm-l6")
  except FileNotFoundError:
    return None


def free_port() -> int:
  """A TCP port on loopback that nothing listens on right now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="session")
def word_module_dir(tmp_path_factory):
  """A tiny hub-format word-embedding module (the AutoML baseline's embedding input)."""
  from automl_baseline import modules  # pylint: disable=import-outside-toplevel
  return modules.write_tiny_word_module(str(tmp_path_factory.mktemp("automl") / "words"))


@pytest.fixture(scope="session")
def sentiment_examples():
  """(train, dev) TextExamples of tiny sentiment sentences, 48 and 16, labels neg/pos."""
  from adapter_keras.tasks.data import TextExamples  # pylint: disable=import-outside-toplevel
  texts, labels = testing.tiny_sentiment_data(48, seed=0)
  dev_texts, dev_labels = testing.tiny_sentiment_data(16, seed=1)
  return (TextExamples(texts, labels, label_names=["neg", "pos"]),
          TextExamples(dev_texts, dev_labels, label_names=["neg", "pos"]))
