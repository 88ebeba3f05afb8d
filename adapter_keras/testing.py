"""Tiny generated encoders and data, for tests and the notebooks' fast mode.

Everything here is written from a seeded numpy generator in the real on-disk
formats (Hugging Face BERT directory: config.json, model.safetensors,
vocab.txt), so the same loading code runs on it as on real weights.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_WORDS = [
    "the", "a", "movie", "film", "was", "is", "good", "great", "bad", "awful", "fun", "boring",
    "plot", "acting", "not", "very", "and", "but", "i", "it", "loved", "hated", "story", "ending",
    "cat", "dog", "sat", "on", "mat", "news", "sport", "game", "team", "won", "lost", "market",
    "stock", "price", "rose", "fell", "vote", "party", "election", "music", "band", "play",
    "un", "##able", "##s", "##ing", "##ed", "##ly", "happy", "sad", "best", "worst", ".", ",", "!",
    "?", "'", "-",
]


def tiny_vocab() -> List[str]:
  return SPECIAL_TOKENS + TINY_WORDS


def tiny_bert_tensors(config: Dict, seed: int = 0, weight_std: float = 0.2) -> Dict[str, np.ndarray]:
  """Random BERT weights in Hugging Face (torch) layout for `config`."""
  rng = np.random.default_rng(seed)
  h, inner = config["hidden_size"], config["intermediate_size"]

  def normal(*shape, std=weight_std):
    return (rng.standard_normal(shape) * std).astype(np.float32)

  def ln():
    return (1.0 + normal(h, std=0.1)), normal(h, std=0.1)

  t = {
      "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
      "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
      "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
      "pooler.dense.weight": normal(h, h),
      "pooler.dense.bias": normal(h),
  }
  t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"] = ln()
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for part in ("query", "key", "value"):
      t[f"{p}attention.self.{part}.weight"] = normal(h, h)
      t[f"{p}attention.self.{part}.bias"] = normal(h)
    t[f"{p}attention.output.dense.weight"] = normal(h, h)
    t[f"{p}attention.output.dense.bias"] = normal(h)
    t[f"{p}attention.output.LayerNorm.weight"], t[f"{p}attention.output.LayerNorm.bias"] = ln()
    t[f"{p}intermediate.dense.weight"] = normal(inner, h)
    t[f"{p}intermediate.dense.bias"] = normal(inner)
    t[f"{p}output.dense.weight"] = normal(h, inner)
    t[f"{p}output.dense.bias"] = normal(h)
    t[f"{p}output.LayerNorm.weight"], t[f"{p}output.LayerNorm.bias"] = ln()
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}


def write_tiny_hf_bert(out_dir: str,
                       seed: int = 0,
                       num_layers: int = 2,
                       hidden_size: int = 32,
                       num_heads: int = 4,
                       intermediate_size: int = 64,
                       max_position_embeddings: int = 128,
                       hidden_act: str = "gelu",
                       vocab: Optional[List[str]] = None,
                       sentence_transformers_mean_pooling: bool = False,
                       weight_std: float = 0.2,
                       dropout: float = 0.1) -> str:
  """Writes a tiny random BERT as a Hugging Face directory and returns its path."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  vocab = vocab or tiny_vocab()
  config = {
      "model_type": "bert",
      "architectures": ["BertModel"],
      "vocab_size": len(vocab),
      "hidden_size": hidden_size,
      "num_hidden_layers": num_layers,
      "num_attention_heads": num_heads,
      "intermediate_size": intermediate_size,
      "max_position_embeddings": max_position_embeddings,
      "type_vocab_size": 2,
      "hidden_act": hidden_act,
      "hidden_dropout_prob": dropout,
      "attention_probs_dropout_prob": dropout,
      "layer_norm_eps": 1e-12,
  }
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"do_lower_case": True}, f)
  tensors = tiny_bert_tensors(config, seed, weight_std)
  tensors["embeddings.position_ids"] = np.arange(max_position_embeddings, dtype=np.int64)[None]
  save_file(tensors, os.path.join(out_dir, "model.safetensors"))
  if sentence_transformers_mean_pooling:
    os.makedirs(os.path.join(out_dir, "1_Pooling"), exist_ok=True)
    with open(os.path.join(out_dir, "1_Pooling", "config.json"), "w", encoding="utf-8") as f:
      json.dump({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, f)
  return out_dir


def _tf1_name(hf_name: str) -> str:
  """Google's original TF1 name of a Hugging Face BERT tensor (modeling.py's variable scopes)."""
  name = "bert/" + hf_name
  for old, new in ((".layer.", "/layer_"), (".LayerNorm.weight", "/LayerNorm/gamma"),
                   (".LayerNorm.bias", "/LayerNorm/beta"), (".weight", "/kernel"), (".bias", "/bias"),
                   (".", "/")):
    name = name.replace(old, new)
  # Embedding tables are plain variables in modeling.py, not layers with a kernel.
  return name[:-len("/kernel")] if "_embeddings/" in name else name


def write_sharded_hf_copy(src_dir: str, out_dir: str, shards: int = 2) -> str:
  """Copies a Hugging Face directory with its model.safetensors split into `shards` files and the
  model.safetensors.index.json that maps each tensor to its shard (as large HF checkpoints ship)."""
  import shutil  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
  shutil.copytree(src_dir, out_dir)
  os.remove(os.path.join(out_dir, "model.safetensors"))
  tensors = load_file(os.path.join(src_dir, "model.safetensors"))
  names, weight_map = sorted(tensors), {}
  for i in range(shards):
    shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    save_file({k: tensors[k] for k in names[i::shards]}, os.path.join(out_dir, shard))
    weight_map.update({k: shard for k in names[i::shards]})
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": sum(v.nbytes for v in tensors.values())}, "weight_map": weight_map}, f)
  return out_dir


def write_tiny_tf1_bert(out_dir: str, seed: int = 0, num_layers: int = 2, hidden_size: int = 32,
                        num_heads: int = 4, intermediate_size: int = 64, max_position_embeddings: int = 128,
                        with_heads: bool = True, vocab: Optional[List[str]] = None) -> str:
  """Writes a tiny random BERT as Google's original release: bert_config.json, vocab.txt and a TF1
  name-based `bert_model.ckpt` (`bert/encoder/layer_0/attention/self/query/kernel`, ...), with the
  pre-training heads and global_step when `with_heads`. Its weights are
  `tiny_bert_tensors(config, seed)`; "gelu" there means modeling.py's tanh approximation."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  vocab = vocab or tiny_vocab()
  config = {"vocab_size": len(vocab), "hidden_size": hidden_size, "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads, "intermediate_size": intermediate_size, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": max_position_embeddings, "type_vocab_size": 2, "initializer_range": 0.02}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bert_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  variables = {}
  for hf_name, value in tiny_bert_tensors(config, seed).items():
    # torch Linear weights are [out, in]; TF1 dense kernels are [in, out].
    is_kernel = hf_name.endswith(".weight") and value.ndim == 2 and "_embeddings" not in hf_name
    variables[_tf1_name(hf_name)] = value.T if is_kernel else value
  if with_heads:
    rng = np.random.default_rng(seed + 1)
    variables["cls/predictions/output_bias"] = rng.standard_normal(len(vocab)).astype(np.float32)
    variables["cls/seq_relationship/output_weights"] = rng.standard_normal((2, hidden_size)).astype(np.float32)
    variables["global_step"] = np.array(1000, np.int64)
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=os.path.join(out_dir, "bert_model.ckpt"), tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(np.ascontiguousarray(variables[n])) for n in names])
  return out_dir


def write_tiny_tfhub_bert(out_dir: str, seed: int = 0, num_layers: int = 2, hidden_size: int = 32,
                          num_heads: int = 4, intermediate_size: int = 64, max_position_embeddings: int = 128,
                          exact_gelu: bool = False, do_lower_case: bool = True, vocab: Optional[List[str]] = None,
                          type_vocab_size: int = 2, initializer_range: float = 0.2):
  """Exports a tiny random Model Garden BertEncoder as a TF Hub BERT encoder SavedModel with Model
  Garden's own exporter (official/nlp/tools/export_tfhub_lib.py, as TF Hub's BERTs were made).

  Returns (out_dir, the original Keras encoder) so outputs can be compared with it. Weights are
  perturbed (by initializer_range / 4) so that biases and LayerNorms are not all zeros and ones.
  """
  import tempfile  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tf_keras  # pylint: disable=import-outside-toplevel
  from official.legacy.bert import configs  # pylint: disable=import-outside-toplevel
  from official.nlp.tools import export_tfhub_lib  # pylint: disable=import-outside-toplevel
  vocab = vocab or tiny_vocab()
  bert_config = configs.BertConfig(
      vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
      num_attention_heads=num_heads, intermediate_size=intermediate_size,
      # Model Garden reads "gelu" as the tanh approximation; a callable passes through unchanged.
      hidden_act=tf_keras.activations.gelu if exact_gelu else "gelu",
      max_position_embeddings=max_position_embeddings, type_vocab_size=type_vocab_size,
      initializer_range=initializer_range)
  tf_keras.utils.set_random_seed(seed)
  encoder = export_tfhub_lib.get_bert_encoder(bert_config)
  rng = np.random.default_rng(seed)
  for variable in encoder.weights:
    variable.assign(variable + rng.normal(0.0, initializer_range / 4, variable.shape).astype(np.float32))
  with tempfile.TemporaryDirectory() as scratch:
    vocab_file = os.path.join(scratch, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
      f.write("\n".join(vocab) + "\n")
    checkpoint = tf.train.Checkpoint(encoder=encoder).save(os.path.join(scratch, "ckpt"))
    export_tfhub_lib.export_model(out_dir, bert_config=bert_config, model_checkpoint_path=checkpoint,
                                  with_mlm=False, vocab_file=vocab_file, do_lower_case=do_lower_case)
  return out_dir, encoder


_POSITIVE = ["good", "great", "fun", "loved", "best", "happy"]
_NEGATIVE = ["bad", "awful", "boring", "hated", "worst", "sad"]
_FILLER = ["the", "movie", "film", "was", "is", "plot", "acting", "very", "and", "it", "story", "ending"]


def tiny_sentiment_data(n: int, seed: int = 0):
  """(texts, labels): short sentences whose label is set by one sentiment word."""
  rng = np.random.default_rng(seed)
  texts, labels = [], []
  for _ in range(n):
    label = int(rng.integers(2))
    words = list(rng.choice(_FILLER, size=int(rng.integers(2, 7))))
    words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_POSITIVE if label else _NEGATIVE)))
    texts.append(" ".join(words))
    labels.append(label)
  return texts, np.asarray(labels, np.int64)


def _write_tsv(path: str, header: Optional[List[str]], rows: List[List[str]]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    if header:
      f.write("\t".join(header) + "\n")
    for row in rows:
      f.write("\t".join(row) + "\n")


def write_tiny_glue_dir(out_dir: str, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> str:
  """SST-2, RTE and STS-B files in the GLUE layout, made of tiny-vocab sentences.

  Labels follow the sentiment word of each sentence (RTE: whether the two
  sentences agree; STS-B: 5 when they agree, 0 otherwise), so a model can
  learn them.
  """
  rng = np.random.default_rng(seed)
  for task, folder in (("sst2", "SST-2"), ("rte", "RTE"), ("stsb", "STS-B")):
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
      texts, labels = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
      others, other_labels = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
      agree = (labels == other_labels)
      path = os.path.join(out_dir, folder, f"{split}.tsv")
      if task == "sst2":
        _write_tsv(path, ["sentence", "label"], [[t, str(l)] for t, l in zip(texts, labels)])
      elif task == "rte":
        _write_tsv(path, ["index", "sentence1", "sentence2", "label"],
                   [[str(i), a, b, "entailment" if g else "not_entailment"]
                    for i, (a, b, g) in enumerate(zip(texts, others, agree))])
      else:
        _write_tsv(path, ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                          "sentence1", "sentence2", "score"],
                   [[str(i), "g", "f", "y", "o", "s1", "s2", a, b, "5.000" if g else "0.000"]
                    for i, (a, b, g) in enumerate(zip(texts, others, agree))])
  return out_dir


# Test-file columns of each GLUE task as download_glue_data.py writes them; the texts go to the
# last one or two columns named here, every other column gets a filler.
_GLUE_TEST_LAYOUTS = {
    "CoLA": ["index", "sentence"],
    "SST-2": ["index", "sentence"],
    "MRPC": ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "STS-B": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"],
    "QQP": ["id", "question1", "question2"],
    "MNLI": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"],
    "QNLI": ["index", "question", "sentence"],
    "RTE": ["index", "sentence1", "sentence2"],
    "WNLI": ["index", "sentence1", "sentence2"],
    "diagnostic": ["index", "sentence1", "sentence2"],
}
_GLUE_TEXT_COLUMNS = {"sentence", "#1 String", "#2 String", "sentence1", "sentence2", "question1", "question2",
                      "question"}


def write_tiny_glue_test_files(out_dir: str, n_test: int = 12, n_train: int = 48, seed: int = 0) -> Dict[str, int]:
  """Test files of every GLUE task and diagnostic/diagnostic.tsv (AX) in the real column layouts,
  plus MNLI train/dev files (so an MNLI model can be trained); adds to `out_dir`, e.g. a
  write_tiny_glue_dir. Returns {test file's path relative to out_dir: its row count}.

  Each file has its own row count (n_test + its position) and its index column counts down in
  steps of 3, so a reader that swaps files or numbers rows itself instead of reading the index
  column gets a test wrong.
  """
  rng = np.random.default_rng(seed)
  folders = [(folder, ["test_matched", "test_mismatched"] if folder == "MNLI" else
              ["diagnostic"] if folder == "diagnostic" else ["test"]) for folder in _GLUE_TEST_LAYOUTS]
  counts = {}
  for folder, splits in folders:
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for split in splits:
      n = n_test + len(counts)
      texts, _ = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
      others, _ = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
      header = _GLUE_TEST_LAYOUTS[folder]
      text_columns = [c for c in header if c in _GLUE_TEXT_COLUMNS]
      rows = []
      for i in range(n):
        values = dict(zip(text_columns, (texts[i], others[i])))
        values[header[0]] = str(3 * (n - i) + 100)
        rows.append([values.get(c, "x") for c in header])
      relative = os.path.join(folder, f"{split}.tsv")
      _write_tsv(os.path.join(out_dir, relative), header, rows)
      counts[relative] = n
  for split, n in (("train", n_train), ("dev_matched", n_test), ("dev_mismatched", n_test)):
    texts, labels = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
    others, other_labels = tiny_sentiment_data(n, seed=int(rng.integers(1 << 30)))
    gold = ["entailment" if a == b else "contradiction" for a, b in zip(labels, other_labels)]
    _write_tsv(os.path.join(out_dir, "MNLI", f"{split}.tsv"),
               ["index", "genre", "sentence1", "sentence2", "gold_label"],
               [[str(i), "g", a, b, g] for i, (a, b, g) in enumerate(zip(texts, others, gold))])
  return counts


_SUBJECTS = ["cat", "dog", "team", "band", "party"]
_VERBS = ["won", "lost", "loved", "hated"]
_OBJECTS = ["game", "vote", "music", "market", "election", "mat"]
_SQUAD_FILLER = "the stock price rose and the news was very boring ."


def tiny_squad_document(n: int, seed: int = 0, title: str = "tiny") -> Dict:
  """A SQuAD v1.1 document of `n` questions made of tiny-vocab words.

  Each context says who did what to what in two sentences, plus a filler
  sentence so that short windows split it; the question asks who did one of
  the two things, and its answers are "the <subject>" and "<subject>" (two
  ground truths, as in the dev set).
  """
  rng = np.random.default_rng(seed)
  paragraphs = []
  for i in range(n):
    s1, s2 = rng.choice(_SUBJECTS, size=2, replace=False)
    v1, v2 = rng.choice(_VERBS, size=2, replace=False)
    o1, o2 = rng.choice(_OBJECTS, size=2, replace=False)
    sentences = [f"the {s1} {v1} the {o1} .", f"the {s2} {v2} the {o2} ."]
    asked = int(rng.integers(2))
    if rng.integers(2):
      sentences.insert(int(rng.integers(3)), _SQUAD_FILLER)
    context = " ".join(sentences)
    subject, verb, obj = (s1, v1, o1) if asked == 0 else (s2, v2, o2)
    start = context.index(f"the {subject} {verb} the {obj}")
    answers = [{"text": f"the {subject}", "answer_start": start},
               {"text": str(subject), "answer_start": start + len("the ")}]
    paragraphs.append({"context": context, "qas": [
        {"id": f"{title}-{i}", "question": f"who {verb} the {obj} ?", "answers": answers}]})
  return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


def write_tiny_squad_json(path: str, n: int, seed: int = 0) -> str:
  """Writes `tiny_squad_document(n, seed)` to `path` and returns the path."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(tiny_squad_document(n, seed, title=os.path.splitext(os.path.basename(path))[0]), f)
  return path
