"""Model Garden directories: bert_config.json (or config.json), vocab.txt and a TF checkpoint written
as `tf.train.Checkpoint(encoder=...)`; also writes them (`save_model_garden_dir`)."""
from __future__ import annotations

import glob
import json
import os
from typing import Optional

import tensorflow as tf
from official.nlp.modeling import networks

from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder, dummy_inputs
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, default_pooling_of,
                                                lower_case_of, read_config, vocab_file_for)
from adapter_keras.pretrained.fingerprint import plain_encoder_variables


def find_checkpoint(path: str) -> Optional[str]:
  latest = tf.train.latest_checkpoint(path)
  if latest:
    return latest
  indexes = sorted(glob.glob(os.path.join(path, "*.index")))
  return indexes[-1][:-len(".index")] if indexes else None


def load_model_garden_checkpoint(encoder: AdapterBertEncoder, config: BertConfig,
                                 checkpoint: str) -> None:
  """Restores `tf.train.Checkpoint(encoder=...)` weights into `encoder`.

  The checkpoint is first restored into a plain BertEncoderV2 of the same
  config, where TF's own matching check is valid; its variables are then
  copied by name into the adapter encoder, and we check that every non-adapter
  variable got exactly one value of the right shape.
  """
  plain = networks.BertEncoderV2(name=encoder.name, **config.encoder_kwargs())
  plain(dummy_inputs())
  status = tf.train.Checkpoint(encoder=plain).read(checkpoint)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise WeightsError(f"checkpoint {checkpoint} lacks encoder variables: {e}") from None
  except (ValueError, tf.errors.InvalidArgumentError) as e:
    raise WeightsError(f"checkpoint {checkpoint} does not fit the BERT config: {e}") from None
  source = {v.name: v for v in plain.weights}
  targets = plain_encoder_variables(encoder)
  target_names = {v.name for v in targets}
  missing = sorted(target_names - set(source))
  unexpected = sorted(set(source) - target_names)
  if missing or unexpected or len(targets) != len(source):
    raise WeightsError(
        f"encoder variables do not correspond to the checkpoint's: missing {missing}, "
        f"unexpected {unexpected}")
  for variable in targets:
    value = source[variable.name]
    if value.shape != variable.shape:
      raise WeightsError(f"{variable.name}: checkpoint shape {value.shape} != {variable.shape}")
    variable.assign(value)


def load_model_garden_dir(path, name) -> PretrainedEncoder:
  config = read_config(path, ("bert_config.json", "config.json"))
  vocab_file = vocab_file_for(path, config)
  encoder = build_encoder(config)
  load_model_garden_checkpoint(encoder, config, find_checkpoint(path))
  return PretrainedEncoder(encoder, config, vocab_file, lower_case_of(path, vocab_file), default_pooling_of(path),
                           os.path.abspath(path), name)


def save_model_garden_dir(pretrained: PretrainedEncoder, out_dir: str) -> str:
  """Writes the encoder as a Model Garden directory (config, vocab, checkpoint)."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bert_config.json"), "w", encoding="utf-8") as f:
    json.dump(pretrained.config.to_dict(), f, indent=2)
  with open(pretrained.vocab_file, encoding="utf-8") as src, \
       open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as dst:
    dst.write(src.read())
  return tf.train.Checkpoint(encoder=pretrained.encoder).write(os.path.join(out_dir, "bert_model.ckpt"))
