"""What a tuning method is: the `TuningMethod` base class every method folder subclasses.

A method (PEFT's `tuners/<method>/` is the model) is one folder under methods/ holding

  config   a small frozen dataclass, validated on construction, with to_dict/from_dict
           (`NoConfig` for methods without settings)
  inject   how it changes a plain, built encoder: add or wrap sublayers (nothing for
           methods that only choose what trains); layers it adds are marked with
           `mark_added`, so that the base fingerprint and `params` can tell them apart
  trains   which *variables* train, decided per variable from its `WeightSite` (so a
           Dense's bias can train while its kernel stays frozen)
  trained_params  its exact trained-parameter formula, checked against the counted one
  frozen_bottom_start  where the frozen bottom ends (the frozen-bottom cache), if anywhere
  merge / unmerge  optionally, folding its update into the base weights
  artifact_config / prepare_artifact  optionally, what an artifact holds when that differs from
           what trains (a reparameterisation saved as the values it computes)
  source_artifacts / with_sources / initialize  optionally, other artifacts its layers are loaded from
           (a composition of trained adapters: fusion, stack), read and checked by the task model
           (models/sources.py) before inject, and starting values set once the model is built

This module imports no TensorFlow: the command line reads the registry for `--method`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

# The attribute that marks a layer some method added to the encoder (its value: the method's name).
ADDED_BY_ATTRIBUTE = "added_by_method"


def mark_added(layer, method_name: str):
  """Marks `layer` (and so every variable it and its sublayers hold) as added by `method_name`."""
  setattr(layer, ADDED_BY_ATTRIBUTE, method_name)
  return layer


def added_by(layer) -> Optional[str]:
  """The name of the method that added `layer`, or None for the pre-trained model's own layers."""
  return getattr(layer, ADDED_BY_ATTRIBUTE, None)


def forget_traced_functions(model) -> None:
  """Drops the predict/train/test functions Keras traced for `model`: a merge or unmerge changes what its
  wrappers compute, and they read their merged flag when traced."""
  for name in ("predict_function", "train_function", "test_function"):
    if hasattr(model, name):
      setattr(model, name, None)


# The attribute that marks a task model whose encoder computes with pre-trained layers other tasks share
# (a MultiTaskModel's tasks): a method must not merge its update into those.
SHARES_BASE_ATTRIBUTE = "shares_base_with_other_tasks"


def mark_shares_base(model) -> None:
  """Marks `model` as one of several tasks computing with the same pre-trained layers (MultiTaskModel)."""
  setattr(model, SHARES_BASE_ATTRIBUTE, True)


def check_can_merge(model, method_name: str) -> None:
  """Refuses, in one line, to merge into kernels that other tasks share (a merge method calls this first)."""
  if getattr(model, SHARES_BASE_ATTRIBUTE, False):
    raise ValueError(f"task model {model.name} shares the base's kernels with the other tasks of a MultiTaskModel; "
                     f"merging its {method_name} update would change them (export or use it unmerged, or merge a "
                     "copy loaded on its own encoder: models.load_adapter)")


# The attribute that marks a layer whose variables a method loads from a source artifact (fusion's and
# stack's frozen source adapters): they never train, and an artifact of the composed model does not hold them.
LOADED_SOURCE_ATTRIBUTE = "loaded_from_source"


def mark_loaded_source(layer):
  """Marks `layer` as holding variables a method loads from a source artifact (not saved, never trained)."""
  setattr(layer, LOADED_SOURCE_ATTRIBUTE, True)
  return layer


def is_loaded_source(layer) -> bool:
  return bool(getattr(layer, LOADED_SOURCE_ATTRIBUTE, False))


_HEX = frozenset("0123456789abcdef")


@dataclasses.dataclass(frozen=True)
class SourceRef:
  """A trained artifact a method's layers are loaded from: its directory, the sha256 of its manifest (which
  pins its weights file by their sha256; None until the artifact is first read) and a name for tables."""

  path: str
  sha256: Optional[str] = None
  name: Optional[str] = None

  def __post_init__(self):
    if not isinstance(self.path, str) or not self.path:
      raise ValueError(f"a source artifact's path must be a non-empty string, got {self.path!r}")
    if self.sha256 is not None and not (isinstance(self.sha256, str) and len(self.sha256) == 64
                                        and set(self.sha256) <= _HEX):
      raise ValueError(f"source {self.path}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
    if self.name is not None and (not isinstance(self.name, str) or not self.name):
      raise ValueError(f"source {self.path}: name must be a non-empty string, got {self.name!r}")

  @classmethod
  def of(cls, value) -> "SourceRef":
    """From a path, a dict {"path", "sha256", "name"} or a SourceRef."""
    if isinstance(value, SourceRef):
      return value
    if isinstance(value, str):
      return cls(value)
    if isinstance(value, Mapping):
      unknown = set(value) - {"path", "sha256", "name"}
      if unknown:
        raise ValueError(f"unknown source settings {sorted(unknown)} (a source has path, sha256, name)")
      return cls(**value)
    raise ValueError(f"a source artifact is a path or a dict with path and sha256, got {value!r}")

  @property
  def label(self) -> str:
    """Its name, else its directory's last component."""
    return self.name or self.path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]

  def to_dict(self) -> dict:
    return dict(path=self.path, sha256=self.sha256, name=self.name)


@dataclasses.dataclass(frozen=True)
class LoadedSource:
  """A source artifact as the task model read it (models/sources.py): the reference (its sha256 filled in), the
  method it was trained with and that method's config (a dict), its manifest and its tensors ({key: numpy array},
  keyed as artifacts.variable_key keys them)."""

  ref: SourceRef
  method: str
  method_config: Mapping = dataclasses.field(repr=False, compare=False)
  manifest: Mapping = dataclasses.field(repr=False, compare=False)
  tensors: Mapping = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class NoConfig:
  """The config of a method without settings."""

  def to_dict(self) -> dict:
    return {}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "NoConfig":
    if d:
      raise ValueError(f"this method takes no settings, got {sorted(d)}")
    return cls()


class MethodSettings:
  """to_dict / from_dict of a method's frozen config dataclass (mix it in): JSON-friendly values (tuples as
  lists), unknown settings refused in one line naming them. `SETTINGS_OF` names the method in that line."""

  SETTINGS_OF = "method"

  def to_dict(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown {cls.SETTINGS_OF} settings {sorted(unknown)}")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class WeightSite:
  """Where one trainable variable sits in a model: everything a method decides on.

  Attributes:
    name: the variable's name in its layer ("kernel", "bias", "gamma", "beta", "embeddings", ...).
    added_by: the method that added the layer holding it (None: the pre-trained encoder's, or the head's).
    is_layer_norm: it belongs to a LayerNormalization.
    is_head: it lies outside the encoder (the task head, or any layer of a user's model around it).
    is_pooler: it belongs to the encoder's pooler.
    head_reads_pooler: the head reads the pooler's output (pooling "cls").
    block: the index of the Transformer block holding it; None outside blocks (embeddings, pooler, head).
    num_layers: Transformer blocks in the encoder.
  """

  name: str
  added_by: Optional[str]
  is_layer_norm: bool
  is_head: bool
  is_pooler: bool
  head_reads_pooler: bool
  block: Optional[int]
  num_layers: int

  @property
  def in_adapter(self) -> bool:
    return self.added_by == "adapter"

  @property
  def is_bias(self) -> bool:
    return self.name in ("bias", "beta")


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """What a trained-parameter formula needs of a task model: the encoder's sizes and the head's."""

  hidden_size: int
  num_layers: int
  intermediate_size: int
  vocab_size: int
  max_position_embeddings: int
  type_vocab_size: int
  head_params: int
  head_reads_pooler: bool

  @classmethod
  def of(cls, bert_config, head_params: int, head_reads_pooler: bool) -> "ModelShape":
    return cls(bert_config.hidden_size, bert_config.num_hidden_layers, bert_config.intermediate_size,
               bert_config.vocab_size, bert_config.max_position_embeddings, bert_config.type_vocab_size,
               head_params, head_reads_pooler)

  @property
  def layer_norm_params(self) -> int:
    """Every LayerNorm of a BERT: the embeddings' and two per block."""
    return (2 * self.num_layers + 1) * 2 * self.hidden_size

  @property
  def block_params(self) -> int:
    d, i = self.hidden_size, self.intermediate_size
    return 4 * (d * d + d) + 2 * d * i + i + d + 2 * 2 * d

  @property
  def pooler_params(self) -> int:
    return self.hidden_size * self.hidden_size + self.hidden_size

  @property
  def base_params(self) -> int:
    """The pre-trained encoder's parameters, pooler included."""
    d = self.hidden_size
    embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
    return embeddings + self.num_layers * self.block_params + self.pooler_params


class TuningMethod:
  """One way of training a pre-trained encoder for a task (see the module docstring).

  Subclass it in a folder of its own and register an instance (methods/registry.py: built in, or a
  plugin through the `adapter_keras.methods` entry point group, or `register()` at run time).

  Class attributes:
    name: what `--method`, manifests and tables call it.
    config_class: its config dataclass.
    fine_tunes_base: pre-trained weights train (analyses give such runs a fine-tuning learning rate;
      the multi-task bank refuses them, since its tasks share the base).
    uses_adapters: its added layers are Houlsby adapters (the ablation switches them off).
    wraps_shared_layers: its inject wraps layers a multi-task bank shares between tasks (the attention
      projections), so the bank refuses it rather than let one task change the others.
  """

  name: str = ""
  config_class: type = NoConfig
  fine_tunes_base: bool = False
  uses_adapters: bool = False
  wraps_shared_layers: bool = False

  # ------------------------------------------------------------- configs

  def make_config(self, config=None, *, adapter=None, top_k=None):
    """This method's config from what a caller holds: its config object or dict, or (for the built-in
    methods) the `adapter` / `top_k` arguments the command line and 0.2.0 artifacts use."""
    del adapter, top_k  # only the adapter and top-k methods read these
    if config is None:
      return self.config_class()
    if isinstance(config, Mapping):
      return self.config_class.from_dict(dict(config))
    if not isinstance(config, self.config_class):
      raise TypeError(f"method {self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
    return config

  def label(self, config) -> str:
    """The method's name in tables."""
    del config
    return self.name

  def validate(self, config, num_layers: int) -> None:
    """Raises ValueError if `config` cannot apply to an encoder of `num_layers` Transformer layers."""

  # ------------------------------------------------------------- the model

  def inject(self, encoder, config, seed: Optional[int] = None) -> None:
    """Adds or wraps sublayers of a built, plain encoder (AdapterBertEncoder); mark each added layer with
    `mark_added(layer, self.name)`. The encoder is called once afterwards, so layers created unbuilt
    get their variables under the encoder's name scopes. Default: nothing (the method only chooses)."""
    del encoder, config, seed

  def trains(self, site: WeightSite, config) -> bool:
    """Whether the variable at `site` trains."""
    raise NotImplementedError

  def trained_params(self, shape: ModelShape, config) -> int:
    """The exact number of parameters that train on a model of `shape` (tests check it against the count)."""
    raise NotImplementedError

  def frozen_bottom_start(self, num_layers: int, config) -> Optional[int]:
    """k, the first Transformer layer with anything that trains, when layers < k and the embeddings are
    entirely frozen (the frozen-bottom cache then runs them once); None when the method trains something
    in the embeddings or layer 0."""
    del num_layers, config
    return None

  def artifact_config(self, config):
    """The config an artifact of a model trained with `config` records (default: `config` itself). A method
    that trains through a reparameterisation records the config without it (prefix tuning's MLP): the
    artifact holds what the reparameterisation computes (`prepare_artifact`), and loads without it."""
    return config

  def prepare_artifact(self, model, config) -> Optional[list]:
    """Called by save_adapter before it writes `model`'s artifact: the variables the artifact holds instead of
    `model.trainable_variables` (default None: those). Each must be a variable, under the same name, of the
    model that `artifact_config(config)` builds, so that load_adapter assigns it."""
    del model, config
    return None

  def source_artifacts(self, config) -> tuple:
    """The artifacts (SourceRefs) this method's layers are loaded from (default none). The task model reads and
    checks each (present, unchanged by sha256, trained on this base) and hands them to `with_sources`."""
    del config
    return ()

  def with_sources(self, config, loaded: tuple):
    """`config` with its sources read (LoadedSources, in source_artifacts' order): what inject builds from."""
    del loaded
    return config

  def initialize(self, model, config) -> None:
    """Sets starting values of variables that train, once the task model is built and its base fingerprinted
    (default nothing; fusion and stack start the LayerNorms from their sources')."""
    del model, config

  def merge(self, model, config) -> None:
    """Folds the method's update into the base weights (methods whose update is linear), so that the merged
    model computes with the base's operations only; `unmerge` takes it out again."""
    raise NotImplementedError(f"method {self.name} has no merge")

  def unmerge(self, model, config) -> None:
    """Takes a merged update out of the base weights again (the outputs as before merge, within float error)."""
    raise NotImplementedError(f"method {self.name} has no merge")

  @property
  def can_merge(self) -> bool:
    """Whether this method overrides `merge` (single-task export folds its update into the base)."""
    return type(self).merge is not TuningMethod.merge

  def __repr__(self) -> str:
    return f"<tuning method {self.name}>"


class MergeableMethod(TuningMethod):
  """A method whose update lives in wrapper layers of one class (`wrapper_class`), each with `merged`, `merge()`
  and `unmerge()` (and optionally `check_mergeable()`, which refuses before anything changes): LoRA, IA3."""

  def wrapper_class(self) -> type:
    raise NotImplementedError

  def wrappers(self, model) -> list:
    from adapter_keras import _model_garden  # pylint: disable=import-outside-toplevel
    return [layer for layer in _model_garden.all_sublayers(model) if isinstance(layer, self.wrapper_class())]

  def merge(self, model, config=None) -> None:
    """Folds every update of `model` into its kernels (outputs within float error of the unmerged); refuses,
    before changing anything, a multi-task bank's task and any wrapper whose check_mergeable refuses."""
    check_can_merge(model, self.name)
    wrappers = self.wrappers(model)
    for wrapper in wrappers:
      if not wrapper.merged and hasattr(wrapper, "check_mergeable"):
        wrapper.check_mergeable()
    for wrapper in wrappers:
      wrapper.merge()
    forget_traced_functions(model)

  def unmerge(self, model, config=None) -> None:
    for wrapper in self.wrappers(model):
      wrapper.unmerge()
    forget_traced_functions(model)
