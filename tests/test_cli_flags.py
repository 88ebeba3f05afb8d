"""cli/flags.py: its TF-free copies equal the library's constants, and every config field has its flag."""
import argparse
import dataclasses

import pytest

from adapter_keras.cli import flags
from adapter_keras.methods.base import SourceRef
from adapter_keras.train.config import TrainConfig


def test_copied_constants_equal_the_libraries():
  from adapter_keras import encoder
  from adapter_keras.layers import pooling
  from adapter_keras.train import distribute, loop, optim, sweep
  from automl_baseline import cli as automl_cli, tuner
  assert flags.POOLINGS == pooling.POOLINGS
  assert flags.DEFAULT_CHECKPOINT_EVERY == loop.DEFAULT_CHECKPOINT_EVERY_STEPS
  assert flags.SWEEP_PRESETS == tuple(sweep.PRESETS)
  assert flags.ARCHITECTURES == tuple(encoder.ARCHITECTURES)
  assert flags.STRATEGIES == distribute.STRATEGIES
  assert flags.MIXED_PRECISION_CHOICES == tuple(optim.MIXED_PRECISION_POLICIES)
  assert automl_cli._ORACLES == tuple(tuner.ORACLES)


def _training_parser(**options):
  parser = argparse.ArgumentParser()
  flags.add_training_arguments(parser, **options)
  return parser


def test_training_flag_defaults_are_the_train_configs():
  args = _training_parser().parse_args([])
  assert TrainConfig(**flags.train_config_kwargs(args)) == TrainConfig()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_every_train_config_field_is_a_flag_or_deliberately_fixed(field):
  # Fixed by the recipe (the paper's) rather than by a flag.
  fixed = {"adapter": "the --adapter-* flags", "dropout_rate": "BERT's 0.1",
           "warmup_fraction": "the paper's 10%", "bucket_by_length": "always on for classification"}
  if field in fixed:
    return
  args = _training_parser().parse_args([])
  assert field in flags.train_config_kwargs(args), f"TrainConfig.{field} has no flag"


def test_train_config_kwargs_reads_back_non_default_values():
  args = _training_parser().parse_args(
      ["--encoder", "enc", "--method", "top-k", "--top-k", "2", "--learning-rate", "1e-3", "--epochs", "5",
       "--seed", "7", "--batch-size", "8", "--max-seq-length", "64", "--max-train-examples", "100",
       "--pooling", "mean", "--strategy", "mirrored", "--jit-compile", "--mixed-precision", "bfloat16",
       "--adapter-size", "16"])
  config = TrainConfig(**flags.train_config_kwargs(args))
  assert (config.encoder, config.method, config.top_k, config.learning_rate, config.epochs, config.seed,
          config.batch_size, config.max_seq_length, config.max_train_examples, config.pooling,
          config.strategy, config.jit_compile, config.mixed_precision, config.adapter.size) == (
              "enc", "top-k", 2, 1e-3, 5, 7, 8, 64, 100, "mean", "mirrored", True, "bfloat16", 16)


def test_static_lengths_flag():
  args = _training_parser().parse_args(["--static-shapes", "--static-lengths", "16", "32", "128"])
  assert TrainConfig(**flags.train_config_kwargs(args)).static_lengths == (16, 32, 128)
  with pytest.raises(ValueError, match="static_lengths must be 1 to 8 ascending integers"):
    TrainConfig(**flags.train_config_kwargs(_training_parser().parse_args(["--static-lengths", "64", "32"])))


def test_data_flags_describe_a_data_source():
  parser = argparse.ArgumentParser()
  flags.add_data_arguments(parser, label_names=True)
  source = flags.data_source_from_args(parser.parse_args(
      ["--train", "t.csv", "--dev", "d.csv", "--text-column", "x", "--label-column", "y",
       "--label-names", "neg,pos"]))
  assert (source.train_file, source.dev_file, source.text_column, source.label_column, source.label_names,
          source.is_generic) == ("t.csv", "d.csv", "x", "y", ["neg", "pos"], True)


@pytest.mark.parametrize("parse, text", [(flags.positive_int, "0"), (flags.positive_int, "x"),
                                         (flags.positive_float, "0"), (flags.positive_float, "nan")])
def test_value_types_refuse_non_positive_values(parse, text):
  with pytest.raises(argparse.ArgumentTypeError, match="expected a positive"):
    parse(text)


# Settings whose default says nothing of their values: the source artifacts of fusion and stack.
_EXAMPLE_ARGV = {"sources": (["a", "b"], (SourceRef("a"), SourceRef("b"))), "lower": (["a"], SourceRef("a"))}


def _non_default_argv(field) -> tuple:
  """Flag arguments giving `field` a value other than its default, and that value."""
  if field.name in _EXAMPLE_ARGV:
    return _EXAMPLE_ARGV[field.name]
  default = field.default
  if isinstance(default, bool):
    return [], not default
  if isinstance(default, tuple):
    return list(default[:1]), default[:1]
  value = default + 1 if isinstance(default, int) else default + 0.25
  return [str(value)], value


@pytest.mark.parametrize("method, field", [(m, f) for m, f in flags._method_flag_fields()],
                         ids=lambda x: getattr(x, "name", x))
def test_every_built_in_method_setting_is_a_flag_reaching_the_config(method, field):
  from adapter_keras.methods import get_method
  flag = flags._method_flag(method, field.name)  # --<method>-<field>, or its own (fusion's --fuse)
  argv, value = _non_default_argv(field)
  if isinstance(field.default, bool):
    flag = flag if value else "--no-" + flag[2:]
  args = _training_parser().parse_args(["--method", method, flag, *argv])
  config = TrainConfig(**flags.train_config_kwargs(args)).method_settings()
  spec = get_method(method)
  assert config == dataclasses.replace(spec.config_class(), **{field.name: value})
  # A method's flag with another --method, or a setting given twice, is one error naming the flag.
  other = _training_parser().parse_args(["--method", "bitfit", flag, *argv])
  with pytest.raises(ValueError, match=f"{flag} is a setting of --method {method}, not of --method bitfit"):
    flags.train_config_kwargs(other)
  twice = _training_parser().parse_args(["--method", method, flag, *argv, "--method-config",
                                         '{"%s": %s}' % (field.name, "1" if not argv else '"x"')])
  with pytest.raises(ValueError, match=f"{flag} and --method-config both set {field.name}"):
    flags.train_config_kwargs(twice)


def test_method_flags_cover_the_built_in_methods_with_settings():
  from adapter_keras.methods.registry import BUILTIN_METHODS
  with_flags = {m for m, _ in flags._method_flag_fields()}
  with_settings = {m.name for m in BUILTIN_METHODS if dataclasses.is_dataclass(m.config_class)
                   and dataclasses.fields(m.config_class)}
  assert with_flags == with_settings - {"adapter", "top-k"} and "lora" in with_flags
