"""What every task model shares, whatever its head: construction on an encoder, the method, the recipe's
compile and fit, artifacts and `load_adapter` (the one loader), the task-type registry, and the refused
whole-model save.

A task model (AdapterClassifier, AdapterRegressor, AdapterSpanExtractor) is one tf_keras.Model from
construction to artifact: it owns its preprocessor, its encoder's spec and config, its tuning method and
the method's config, its task (a TaskSpec) and the settings of the run that trained it. `adapter-keras
train` builds the same classes (train/run.py: build_trainable_model), so the command line and Keras code
train, save and load one kind of object.

Construction from an encoder spec follows the command line's order exactly: seed everything with `seed`,
load the plain pre-trained encoder, inject the method (methods.inject_method), build the head, apply the
method (methods.apply_method), all under tf_keras's checkpointable dropout generators
(train/checkpoints.resumable_randomness). Given an already loaded PretrainedEncoder (a run, the multi-task
bank) it does the same minus the seeding and loading, which its caller did.

`fit` on raw inputs trains through train/recipe.py's `fit` with the task type's recipe: the same data
order (from (seed, epoch)), length grouping, dropout generators, epoch loop, best-epoch restore (with
validation_data) and NaN stop as `adapter-keras train` with the same seed, data and settings. Other
inputs (dicts of encoder features, datasets of them) go to Keras's own fit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Dict, Optional

import tf_keras

from adapter_keras.artifacts import (ArtifactError, assign_weights, check_fingerprint, method_of, read_manifest,
                                     read_weights, resolve_artifact_dir, save_artifact, task_type_of)
from adapter_keras.methods import apply_method, get_method, inject_method, parameter_report
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import (NAMED_ENCODERS, PretrainedEncoder, base_fingerprint, check_max_seq_length,
                                      load_encoder)
from adapter_keras.train import recipe as recipes
from adapter_keras.train.checkpoints import resumable_randomness
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.loop import seed_everything
from adapter_keras.train.optim import MIXED_PRECISION_POLICIES, create_optimizer
from adapter_keras.models.inputs import is_text_input
from adapter_keras.models.keras3 import refuse_keras3_objects
from adapter_keras.models.sources import read_sources, relocated_config

# What TensorFlow accepts as a name scope, hence as a Keras model's name.
KERAS_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-]*")


def mixed_precision_of(layer) -> Optional[str]:
  """The train/optim.py name of the layer's mixed policy (None: float32)."""
  for name, policy in MIXED_PRECISION_POLICIES.items():
    if layer.dtype_policy.name == policy:
      return name
  return None


@contextlib.contextmanager
def constructing(encoder, seed: int):
  """The context a task model is built in: with an encoder spec, everything seeded from `seed` first (as
  train/run.py does before it loads); dropout layers drawing from checkpointable generators."""
  if isinstance(encoder, str):
    seed_everything(seed)
  with resumable_randomness():
    yield


def loaded_encoder(encoder, method: str, method_config, seed: int, max_seq_length: int):
  """(the PretrainedEncoder a task model is built on, its method injected; the method's config with the source
  artifacts it names read: models/sources.py). Call inside `constructing`."""
  if isinstance(encoder, str):
    encoder = load_encoder(encoder)
  elif not isinstance(encoder, PretrainedEncoder):
    raise TypeError(f"encoder must be an encoder spec (a name such as 'minilm-l6' or a directory; see "
                    f"pretrained.load_encoder) or a loaded PretrainedEncoder, got {type(encoder).__name__}; to put "
                    "adapters into a BertEncoderV2 object use adapter_keras.add_adapters")
  check_max_seq_length(max_seq_length, encoder.config)
  method_config = read_sources(method, method_config, encoder)
  inject_method(encoder.encoder, method, method_config, seed)
  return encoder, method_config


def method_and_config(method: str, adapter=None, top_k: Optional[int] = None, method_config=None):
  """(method name, its config object) from a task model's arguments (methods/: make_config); `adapter` (the
  constructors' default AdapterConfig()) concerns method "adapter" only."""
  spec = get_method(method)
  if isinstance(adapter, dict):
    from adapter_keras.methods.adapter.config import AdapterConfig  # pylint: disable=import-outside-toplevel
    adapter = AdapterConfig.from_dict(adapter)
  if spec.name == "adapter" and method_config is None and adapter is None:
    raise ValueError("method 'adapter' trains adapters: give an AdapterConfig (adapter=None is for methods "
                     "without adapters: full, top-k, layer-norm)")
  return spec.name, spec.make_config(method_config, adapter=adapter, top_k=top_k)


def method_fields(method: str, settings) -> dict:
  """A method's config in the fields the command line and TrainConfig use (the inverse of
  TrainConfig.method_settings): adapter (AdapterConfig or None), top_k, method_config (a dict or None)."""
  return dict(adapter=settings if method == "adapter" else None, top_k=settings.k if method == "top-k" else None,
              method_config=None if method in ("adapter", "top-k") else settings.to_dict())


def recorded_config(defaults: TrainConfig, pretrained: PretrainedEncoder, method: str, settings, **fields):
  """The TrainConfig a task model records as its run before any fit (`defaults` with these settings)."""
  given = method_fields(method, settings)
  return dataclasses.replace(defaults, encoder=pretrained.name, method=method,
                             **dict(given, adapter=given["adapter"] or defaults.adapter), **fields)


# Task type -> task model class: every subclass of TaskModelBase that names its `task_type` registers here
# (AdapterClassifier "classification", AdapterRegressor "regression", AdapterSpanExtractor "span").
TASK_MODELS: Dict[str, type] = {}


class TaskModelBase:
  """The shared part of the task models (a mixin before their Keras network class: TaskModel, SpanModel).

  Each subclass says how it compiles (`_compile_with`), what recipe trains it (`_recipe_for`), what its
  artifact records besides the shared manifest (`_manifest_extras`), which constructor arguments an
  artifact gives back (`arguments_from_manifest`) and how a training run builds it (`for_run`).
  """

  task_type = ""  # the artifact's task type: TASK_MODELS maps it back to the class

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get("task_type"):
      TASK_MODELS[cls.task_type] = cls
  default_train_config = TrainConfig()

  def _set_up(self, pretrained: PretrainedEncoder, method: str, method_config, seed: int, max_seq_length: int,
              train_config: TrainConfig):
    self.encoder_spec = pretrained.name
    self.method = method
    self.method_config = method_config
    self.seed = seed
    self.bert_config = pretrained.config
    self.preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, max_seq_length,
                                         name="preprocessor")
    # Before any training: an artifact is tied to the base as it was loaded (method "full" changes it).
    self.base_fingerprint = base_fingerprint(pretrained.encoder)
    self.build_with_dummy_inputs()
    apply_method(self, method, config=method_config)
    get_method(method).initialize(self, method_config)
    self._recipe = None  # (learning rate, warm-up, compile kwargs) of a no-argument compile()
    self._compiled_by_user = False
    # What save_adapter records as the run (manifest train_config, train_examples); fit updates it.
    self.train_config = train_config
    self.train_examples = 0
    self.train_result = None

  @property
  def adapter_config(self):
    """The AdapterConfig of method "adapter", else None."""
    return self.method_config if self.method == "adapter" else None

  @property
  def top_k(self) -> Optional[int]:
    return self.method_config.k if self.method == "top-k" else None

  def _method_arguments(self) -> dict:
    """The constructor arguments that rebuild this model's method (get_config)."""
    given = method_fields(self.method, self.method_config)
    return dict(given, method=self.method, adapter=given["adapter"].to_dict() if given["adapter"] else None)

  def record_training(self, config: TrainConfig, train_examples: int) -> None:
    """What save_adapter records as the run that trained this model."""
    self.train_config = config
    self.train_examples = int(train_examples)

  def save(self, filepath, *args, **kwargs):
    raise NotImplementedError(
        f"{type(self).__name__} is not saved as a whole Keras model: that would copy the frozen base into "
        "every file and could not check it against the base on loading. Use save_adapter(dir) (the trained "
        f"variables only; {type(self).__name__}.load_adapter(dir, encoder=...) reloads them bit for bit)"
        + self._save_alternative)

  _save_alternative = " or export(dir) (a SavedModel that takes raw strings)"

  # ---------------------------------------------------------------- compile / fit

  def compile(self, optimizer=None, loss=None, metrics=None, *, learning_rate: Optional[float] = None,
              warmup_fraction: Optional[float] = None, **kwargs):
    """With no optimizer, loss or metrics: the paper's recipe, Adam with a linear warm-up over the
    first `warmup_fraction` of the steps and linear decay to 0 at the end of `fit`, and the task's
    loss and metrics (train/classification.py; train/squad.py for spans). Otherwise Keras's compile
    (tf_keras objects only: Keras 3 objects are refused with the fix named)."""
    refuse_keras3_objects("compile", optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
    if optimizer is None and loss is None and metrics is None:
      defaults = self.default_train_config
      lr = defaults.learning_rate if learning_rate is None else learning_rate
      warmup = defaults.warmup_fraction if warmup_fraction is None else warmup_fraction
      TrainConfig(learning_rate=lr, warmup_fraction=warmup)  # refuses a rate or fraction no run could use
      # One step stands in until fit knows the step count, so that evaluate works right away.
      self._compile_recipe(lr, warmup, 1, kwargs)
      self._recipe = (lr, warmup, kwargs)
      self._compiled_by_user = False
      return
    if learning_rate is not None or warmup_fraction is not None:
      raise ValueError("learning_rate and warmup_fraction set the recipe's optimizer; give them without "
                       "an optimizer, or put them into your own optimizer")
    self._recipe = None
    self._compiled_by_user = True
    super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

  def _compile_recipe(self, learning_rate, warmup_fraction, total_steps, kwargs):
    with self.distribute_strategy.scope():
      optimizer = create_optimizer(learning_rate, total_steps, warmup_fraction,
                                   mixed_precision=mixed_precision_of(self.encoder))
      self._compile_with(optimizer, **kwargs)

  def _compile_with(self, optimizer, **kwargs):
    raise NotImplementedError  # each head has its own loss and metrics

  def _recipe_for(self, x, y, validation_data):
    """(the task type's TaskRecipe over these raw inputs, unprepared)."""
    raise NotImplementedError

  def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
          validation_data=None, shuffle=True, initial_epoch=0, **kwargs):
    """Keras's fit. On raw inputs (texts, (texts, texts_b) pairs, (questions, contexts) for spans, or a
    tf.data.Dataset of them with their labels) it trains as `adapter-keras train` does (module
    docstring): every epoch in an order drawn from (seed, epoch), batches grouped by length; with
    `validation_data` the dev metrics are computed after every epoch (History's "val_*"), the model
    ends with its best epoch's weights, and a NaN loss stops training with the best weights kept.

    After a no-argument compile() (or none) the recipe's optimizer is made anew for this fit, its
    schedule spanning its steps; after compile(optimizer, loss, ...) yours is used. Returns a History.
    """
    refuse_keras3_objects("fit", callbacks=callbacks)
    if not is_text_input(x):
      return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                         validation_data=validation_data, shuffle=shuffle, initial_epoch=initial_epoch, **kwargs)
    if initial_epoch or not shuffle or kwargs:
      given = sorted(set(kwargs) | ({"initial_epoch"} if initial_epoch else set()) | ({"shuffle"} if not shuffle
                                                                                      else set()))
      raise ValueError(f"fit on raw inputs trains as `adapter-keras train` does and takes no {', '.join(given)}: "
                       "every epoch's order comes from the model's seed")
    learning_rate, warmup, compile_kwargs = self._recipe or (None, None, {})
    config = dataclasses.replace(
        self.train_config, epochs=epochs, batch_size=batch_size or self.train_config.batch_size,
        learning_rate=learning_rate or self.train_config.learning_rate,
        warmup_fraction=self.train_config.warmup_fraction if warmup is None else warmup,
        mixed_precision=mixed_precision_of(self.encoder))
    recipe = self._recipe_for(x, y, validation_data)
    recipe.prepare(self.preprocessor, config)
    use_recipe_compile = not self._compiled_by_user
    if use_recipe_compile and compile_kwargs:
      config = dataclasses.replace(config, jit_compile=bool(compile_kwargs.get("jit_compile", False)),
                                   steps_per_execution=int(compile_kwargs.get("steps_per_execution", 1)))
    history = tf_keras.callbacks.History()  # Keras's: the epoch logs, the library's "val_*" dev metrics included
    result, _ = recipes.fit(recipe, self, config, self.distribute_strategy, verbose=verbose != 0,
                            callbacks=list(callbacks or ()) + [history], compile_model=use_recipe_compile)
    if use_recipe_compile:
      self._recipe = (config.learning_rate, config.warmup_fraction, compile_kwargs)
    self.record_training(config, recipe.num_train_examples)
    self.train_result = result
    return history

  # ---------------------------------------------------------------- reports and artifacts

  def parameter_report(self):
    """methods.parameter_report: base, method, LayerNorm and head parameters, and what trains."""
    return parameter_report(self)

  def _manifest_extras(self) -> dict:
    return {}

  def manifest(self) -> dict:
    """What this model's artifact records besides its weights (artifacts.py's format)."""
    return dict(
        task=self.task.to_dict(), method=self.method, method_config=self.method_config.to_dict(),
        pooling=self.pooling, dropout_rate=self.dropout_rate, tokenizer=self.preprocessor.settings(),
        encoder=dict(spec=self.encoder_spec, config=self.bert_config.to_dict()),
        base_fingerprint=self.base_fingerprint, train_config=self.train_config.to_dict(),
        train_examples=self.train_examples, **self._manifest_extras())

  def save_adapter(self, out_dir: str, overwrite: bool = False) -> str:
    """An adapter_keras artifact (artifacts.py): the trained variables only, tied to this base's fingerprint;
    `load_adapter` and the command line's evaluate/export/predict read it. `out_dir` must be new or an empty
    directory; `overwrite=True` lets it replace an earlier artifact there (and nothing else). A method may save
    another form of what it trained (TuningMethod.prepare_artifact, artifact_config: prefix tuning's MLP as
    the prefixes it computes)."""
    spec = get_method(self.method)
    variables = spec.prepare_artifact(self, self.method_config)
    manifest = dict(self.manifest(), method_config=spec.artifact_config(self.method_config).to_dict())
    return save_artifact(out_dir, self, manifest, overwrite=overwrite, variables=variables)

  @classmethod
  def load_adapter(cls, artifact_dir: str, encoder: Optional[str] = None, **kwargs):
    """The model an artifact holds, rebuilt on `encoder` (models.load_adapter, the one loader); refuses an
    artifact of another task type."""
    return load_adapter(artifact_dir, encoder, expected=cls, **kwargs)

  @classmethod
  def arguments_from_manifest(cls, manifest: dict, artifact_dir: str) -> dict:
    """The constructor arguments of this task type that an artifact gives back."""
    raise NotImplementedError


def keras_name(name: str) -> Optional[str]:
  """`name` if Keras takes it as a model name, else None."""
  return name if isinstance(name, str) and KERAS_NAME.fullmatch(name) else None


# ---------------------------------------------------------------- task types and the one loader


def model_class(task_type: str) -> type:
  """The task model class of a task type; ValueError naming the known ones otherwise."""
  if task_type not in TASK_MODELS:
    raise ValueError(f"no task model for task type {task_type!r}; known: {', '.join(TASK_MODELS)}")
  return TASK_MODELS[task_type]


def build_for_task(task, pretrained: PretrainedEncoder, config):
  """The model a training run builds for `task` (a TaskSpec or SQuAD's task) on a loaded plain encoder."""
  return model_class(task.task_type).for_run(pretrained, task, config)


def _encoder_for(manifest: Dict, encoder, artifact_dir: str):
  if encoder is not None:
    return encoder
  spec = manifest["encoder"]["spec"]
  if spec in NAMED_ENCODERS:
    return spec
  # An artifact is data: what it names is never fetched or run unless the caller names it too.
  raise ArtifactError(f"artifact {artifact_dir} was trained on encoder {spec!r}: give that base explicitly "
                      "(encoder=..., --encoder); only named offline encoders "
                      f"({', '.join(NAMED_ENCODERS)}) are taken from an artifact's manifest")


def load_adapter(artifact_dir: str, encoder=None, expected: Optional[type] = None, **kwargs) -> TaskModelBase:
  """The task model an artifact holds, rebuilt on `encoder` (a spec or a loaded plain PretrainedEncoder).

  Refuses (ArtifactError) an edited or incomplete artifact (artifacts.read_manifest, read_weights), one of
  another task type than `expected`, a method that is not installed, and a base encoder whose fingerprint
  or tokenizer differs from the one it was trained on. `kwargs` go to the constructor (name).
  """
  artifact_dir = resolve_artifact_dir(artifact_dir)
  manifest = read_manifest(artifact_dir)
  tensors = read_weights(artifact_dir, manifest)
  try:
    cls = model_class(task_type_of(manifest))
  except ValueError as e:
    raise ArtifactError(f"artifact {artifact_dir}: {e}") from None
  if expected is not None and not issubclass(cls, expected):
    raise ArtifactError(f"artifact {artifact_dir} holds a {cls.task_type} model, not a {expected.task_type} one: "
                        f"load it with {cls.__name__} (or adapter_keras.load_adapter)")
  method, method_config = method_of(manifest)
  try:
    get_method(method)
  except ValueError as e:
    raise ArtifactError(f"artifact {artifact_dir} was trained with method {method!r}, which is not installed "
                        f"here ({e})") from None
  method_config = relocated_config(method, method_config, artifact_dir)
  spec = _encoder_for(manifest, encoder, artifact_dir)
  tokenizer = manifest["tokenizer"]
  name = keras_name(manifest["task"].get("name"))
  if name:
    kwargs.setdefault("name", name)
  try:
    model = cls(spec, method=method, method_config=method_config, max_seq_length=tokenizer["max_seq_length"],
                dropout_rate=manifest.get("dropout_rate", 0.1), **cls.arguments_from_manifest(manifest, artifact_dir),
                **kwargs)
  except (TypeError, ValueError) as e:
    if isinstance(e, ArtifactError) or "max_seq_length" not in str(e):
      raise
    raise ArtifactError(f"artifact {artifact_dir}: its tokenizer's {e}") from None
  encoder_name = spec if isinstance(spec, str) else spec.name
  check_fingerprint(manifest, model.base_fingerprint, encoder_name, artifact_dir)
  if tokenizer["lower_case"] != model.preprocessor.lower_case:
    raise ArtifactError(f"artifact {artifact_dir} was trained with lower_case={tokenizer['lower_case']}, encoder "
                        f"{encoder_name!r} tokenizes with lower_case={model.preprocessor.lower_case}")
  assign_weights(model, tensors, artifact_dir)
  model.record_training(_recorded_config(manifest, model.train_config), manifest.get("train_examples") or 0)
  model.loaded_manifest = manifest
  return model


def _recorded_config(manifest: Dict, default):
  """The TrainConfig the artifact's run recorded (its class: the model's), or `default` for a config this
  version cannot rebuild (a hand-made 0.1.0 manifest)."""
  recorded = manifest.get("train_config")
  if not isinstance(recorded, dict):
    return default
  known = {f.name for f in dataclasses.fields(type(default))}
  try:
    return type(default).from_dict({k: v for k, v in recorded.items() if k in known})
  except (TypeError, ValueError, KeyError):
    return default
