"""The bottleneck adapter and the wrappers that attach it to a sublayer.

The paper's adapter maps x -> x + up(act(down(x))) with down: d -> m and
up: m -> d. Both kernels start from a truncated normal (cut at two standard
deviations) with a small std and the biases start at zero, so a fresh adapter
is a near-identity. Parameters: 2md + d + m.

The architecture variants of the paper's section 3.5 are options of the same
layer: a LayerNorm/BatchNorm on the adapter's input (+2d parameters), k > 1
hidden layers of width m (+(k - 1)(m^2 + m)), and a multiplicative
interaction h * (1 + f(x)) instead of h + f(x). Parallel placement (the
adapter reads a sub-layer's input, its output is combined with the
sub-layer's output) uses `SublayerInputTap` + `SublayerWithParallelAdapter`.

Each adapter also holds a non-trainable scalar `enabled` gate. Setting it to 0
makes the layer return the tensor it modifies bit for bit (h + 0 * f == h,
h * (1 + 0 * f) == h), which is how ablations and "pure base" inference switch
adapters off without retracing or copying the model.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import tensorflow as tf
import tf_keras
from adapter_keras.values import KERAS_PACKAGE, is_integer

# Hidden layer i (i >= 1) of a deep adapter gets seed `seed * 2 + i * _HIDDEN_SEED_STRIDE`: far
# from every down/up seed (`seed * 2`, `seed * 2 + 1`) of the adapters of one encoder.
_HIDDEN_SEED_STRIDE = 1_000_003


def truncated_normal(stddev: float, seed: Optional[int]) -> tf_keras.initializers.Initializer:
  """A fresh initializer instance; never share one between two kernels.

  tf_keras's TruncatedNormal re-draws values beyond two standard deviations,
  which is the paper's initialisation.
  """
  return tf_keras.initializers.TruncatedNormal(mean=0.0, stddev=stddev, seed=seed)


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class BottleneckAdapter(tf_keras.layers.Layer):
  """h + f(x) (or h * (1 + f(x))) with f a small bottleneck MLP; near-identity at init.

  f(x) = up(act(... act(down(norm(x))))). Called as `adapter(x)` it modifies
  its own input (h = x, sequential placement); `adapter(x, base=h)` reads x
  and modifies h (parallel placement).

  Args:
    bottleneck_size: m, the width of the bottleneck.
    activation: nonlinearity applied to the bottleneck.
    init_std: std of the truncated normal for the down- and up-projection.
    seed: optional seed; every kernel gets a distinct seed derived from it.
    norm: None, "layer" or "batch": a norm on the adapter's input x. On the
      input (not the output) so that the adapter stays a near-identity.
    hidden_layers: k; k - 1 extra m -> m layers (with the activation) sit
      between down and up. They start from a variance-preserving truncated
      normal (std 1/sqrt(m)), not from init_std: the small up-projection
      already makes the adapter a near-identity, and tiny middle kernels
      would shrink the gradients reaching the down-projection.
    interaction: "additive" or "multiplicative".
    scale: s, the factor on f (h + s f(x)); 1 in the paper, 4 in He et al.'s scaled parallel adapter.
  """

  added_by_method = "adapter"  # methods.base.added_by: a layer the adapter method adds to the encoder

  def __init__(self,
               bottleneck_size: int,
               activation: str = "gelu",
               init_std: float = 1e-2,
               seed: Optional[int] = None,
               norm: Optional[str] = None,
               hidden_layers: int = 1,
               interaction: str = "additive",
               scale: float = 1.0,
               **kwargs):
    super().__init__(**kwargs)
    if not is_integer(bottleneck_size) or bottleneck_size < 1:
      raise ValueError(f"bottleneck_size must be an integer >= 1, got {bottleneck_size!r}")
    if norm not in (None, "layer", "batch"):
      raise ValueError(f"norm must be None, 'layer' or 'batch', got {norm!r}")
    if not is_integer(hidden_layers) or hidden_layers < 1:
      raise ValueError(f"hidden_layers must be an integer >= 1, got {hidden_layers!r}")
    if interaction not in ("additive", "multiplicative"):
      raise ValueError(f"interaction must be 'additive' or 'multiplicative', got {interaction!r}")
    self.bottleneck_size = bottleneck_size
    self.activation_name = activation
    self.init_std = float(init_std)
    self.seed = seed
    self.norm = norm
    self.hidden_layers = hidden_layers
    self.interaction = interaction
    self.scale = float(scale)

  def _derived_seed(self, offset: int) -> Optional[int]:
    return None if self.seed is None else self.seed * 2 + offset

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    hidden_size = int(input_shape[-1])
    self.norm_layer = None
    if self.norm == "layer":
      self.norm_layer = tf_keras.layers.LayerNormalization(epsilon=1e-12, name="norm")
    elif self.norm == "batch":
      self.norm_layer = tf_keras.layers.BatchNormalization(name="norm")
    self.down_project = tf_keras.layers.Dense(
        self.bottleneck_size,
        kernel_initializer=truncated_normal(self.init_std, self._derived_seed(0)),
        bias_initializer="zeros",
        name="down")
    hidden_projects = [
        tf_keras.layers.Dense(
            self.bottleneck_size,
            kernel_initializer=truncated_normal(
                self.bottleneck_size ** -0.5, self._derived_seed(i * _HIDDEN_SEED_STRIDE)),
            bias_initializer="zeros",
            name=f"hidden_{i}")
        for i in range(1, self.hidden_layers)
    ]
    if hidden_projects:
      # Tracked only when present, so the paper's adapter keeps exactly its
      # old object graph (an empty tracked list would add a checkpoint node).
      self._hidden_projects = hidden_projects
    self.up_project = tf_keras.layers.Dense(
        hidden_size,
        kernel_initializer=truncated_normal(self.init_std, self._derived_seed(1)),
        bias_initializer="zeros",
        name="up")
    # Build the sublayers now (not lazily at the first call) so that the
    # adapter's variables exist, under their own names, as soon as it is built.
    # They are built for the [tokens, d] matrices `transform` feeds them
    # (BatchNormalization would otherwise insist on the input's rank).
    tokens_shape = tf.TensorShape([None, hidden_size])
    bottleneck_shape = tf.TensorShape([None, self.bottleneck_size])
    if self.norm_layer is not None:
      with tf.name_scope(self.norm_layer.name):
        self.norm_layer.build(tokens_shape)
    with tf.name_scope(self.down_project.name):
      self.down_project.build(tokens_shape)
    for layer in self.hidden_projects:
      with tf.name_scope(layer.name):
        layer.build(bottleneck_shape)
    with tf.name_scope(self.up_project.name):
      self.up_project.build(bottleneck_shape)
    self.activation = tf_keras.activations.get(self.activation_name)
    self.enabled = self.add_weight(
        name="enabled", shape=(), initializer="ones", trainable=False, dtype=tf.float32)
    super().build(input_shape)

  @property
  def hidden_projects(self) -> list:
    """The m x m layers between down and up (empty for the paper's adapter)."""
    return list(getattr(self, "_hidden_projects", []))

  def transform(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    """f(x), the bottleneck MLP alone: no gate, no residual or product.

    `inputs` may have any rank >= 2; the MLP runs on them flattened to a
    [tokens, d] matrix, one reshape in and one out. A Dense layer given a
    [batch, seq, d] tensor goes through tf.tensordot instead, which with
    dynamic shapes adds shape ops and two reshapes per projection, forward
    and backward: 63 graph ops per adapter instead of 27 (docs/performance.md).
    """
    x = tf.reshape(inputs, [-1, inputs.shape[-1]])
    if isinstance(self.norm_layer, tf_keras.layers.BatchNormalization):
      x = self.norm_layer(x, training=training)
    elif self.norm_layer is not None:
      x = self.norm_layer(x)
    x = self.activation(self.down_project(x))
    for layer in self.hidden_projects:
      x = self.activation(layer(x))
    return tf.reshape(self.up_project(x), tf.shape(inputs))

  def call(self, inputs, base: Optional[tf.Tensor] = None, training: Optional[bool] = None):
    """Reads `inputs`, modifies `base` (default: `inputs` itself)."""
    target = inputs if base is None else base
    # tf.cast adds no op when the dtypes already agree (always, in float32).
    delta = tf.cast(self.enabled, target.dtype) * tf.cast(self.transform(inputs, training), target.dtype)
    if self.scale != 1.0:  # the paper's adapter keeps its graph: no multiply by 1
      delta = self.scale * delta
    if self.interaction == "multiplicative":
      return target * (1.0 + delta)
    return target + delta

  def set_enabled(self, enabled: bool) -> None:
    if not self.built:
      raise RuntimeError(f"{self.name} is not built yet; call the model once first")
    self.enabled.assign(1.0 if enabled else 0.0)

  @property
  def _sublayers(self) -> list:
    layers = [self.norm_layer] if self.norm_layer is not None else []
    return layers + [self.down_project] + list(self.hidden_projects) + [self.up_project]

  @property
  def parameters(self) -> list:
    """The adapter's trainable-kind variables (kernels, biases, norm scale and
    offset), not the gate nor BatchNorm's moving statistics."""
    return [v for layer in self._sublayers for v in layer.weights if not _is_moving_statistic(layer, v)]

  @property
  def statistics(self) -> list:
    """Non-trainable state the adapter computes with besides its parameters:
    BatchNorm's moving mean and variance (empty for the other variants).
    Saving a trained adapter must save these too."""
    if not isinstance(self.norm_layer, tf_keras.layers.BatchNormalization):
      return []
    return [self.norm_layer.moving_mean, self.norm_layer.moving_variance]

  @property
  def is_enabled(self) -> bool:
    return bool(self.enabled.numpy() != 0.0)

  def get_config(self):
    config = super().get_config()
    config.update(
        bottleneck_size=self.bottleneck_size,
        activation=self.activation_name,
        init_std=self.init_std,
        seed=self.seed,
        norm=self.norm,
        hidden_layers=self.hidden_layers,
        interaction=self.interaction)
    if self.scale != 1.0:
      config.update(scale=self.scale)
    return config


def _is_moving_statistic(layer: tf_keras.layers.Layer, variable: tf.Variable) -> bool:
  return (isinstance(layer, tf_keras.layers.BatchNormalization)
          and any(variable is s for s in (layer.moving_mean, layer.moving_variance)))


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class SublayerWithAdapter(tf_keras.layers.Layer):
  """Runs `sublayer`, then `adapter` on its output.

  Used to put an adapter right after an existing sublayer of a pre-built block
  (the dropout after a projection) without touching the block's code or the
  names of its pre-trained variables.
  """

  def __init__(self, sublayer: tf_keras.layers.Layer, adapter: BottleneckAdapter, **kwargs):
    super().__init__(**kwargs)
    self.sublayer = sublayer
    self.adapter = adapter

  def call(self, inputs):
    return self.adapter(self.sublayer(inputs))

  def get_config(self):
    config = super().get_config()
    config.update(
        sublayer=tf_keras.layers.serialize(self.sublayer),
        adapter=tf_keras.layers.serialize(self.adapter))
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["sublayer"] = tf_keras.layers.deserialize(config["sublayer"])
    config["adapter"] = tf_keras.layers.deserialize(config["adapter"])
    return cls(**config)


class SublayerInputTap:
  """Stands in for a sub-layer of a block and remembers the input of its last call.

  Deliberately not a Keras layer: it adds no name scope (the wrapped layer's
  variables keep their names), no tracking (the block's checkpoint keeps
  pointing at the wrapped layer) and forwards attribute reads to the wrapped
  layer, so code such as weight loaders that reaches into
  `block._attention_layer._query_dense` is unaffected. The recorded input is
  per thread because MirroredStrategy traces its replicas in threads.

  Args:
    sublayer: the layer whose input a parallel adapter reads.
    input_name: the keyword the block passes that input under when it does
      not pass it positionally ("query" for attention).
  """

  def __init__(self, sublayer: tf_keras.layers.Layer, input_name: str = "inputs"):
    self.sublayer = sublayer
    self.input_name = input_name
    self._recorded = threading.local()

  @tf.autograph.experimental.do_not_convert
  def __call__(self, *args, **kwargs):
    self._recorded.value = args[0] if args else kwargs[self.input_name]
    return self.sublayer(*args, **kwargs)

  def pop_input(self) -> tf.Tensor:
    """The input of the latest call, which is then forgotten."""
    value = getattr(self._recorded, "value", None)
    if value is None:
      raise RuntimeError(
          f"no input of {self.sublayer.name} was recorded: a parallel adapter needs its sub-layer "
          "to run through the tap first (was the sub-layer replaced after build? use "
          "AdapterTransformerEncoderBlock.set_base_sublayer)")
    self._recorded.value = None
    return value

  def __getattr__(self, name: str) -> Any:
    # Only reached for names the tap itself lacks; the guard avoids recursion
    # before __init__ has set `sublayer` (copy, pickle).
    if name == "sublayer" or "sublayer" not in self.__dict__:
      raise AttributeError(name)
    return getattr(self.__dict__["sublayer"], name)


class SublayerWithParallelAdapter(SublayerWithAdapter):
  """Runs `sublayer`, then lets `adapter` read the tapped sub-layer input and
  modify the result: out = sublayer(h) + f(x), x the input recorded by `tap`.

  Built by AdapterTransformerEncoderBlock from its adapter_config; the tap
  ties it to one block instance, so it has no config of its own.
  """

  def __init__(self, sublayer: tf_keras.layers.Layer, adapter: BottleneckAdapter,
               tap: SublayerInputTap, **kwargs):
    super().__init__(sublayer, adapter, **kwargs)
    self.tap = tap

  def call(self, inputs):
    return self.adapter(self.tap.pop_input(), base=self.sublayer(inputs))

  def get_config(self):
    raise NotImplementedError(
        "SublayerWithParallelAdapter is rebuilt by AdapterTransformerEncoderBlock.build() from the "
        "block's adapter_config; serialise the block instead")
