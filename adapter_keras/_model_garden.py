"""Every access to private names of Model Garden (tf-models-official 2.20) and tf_keras, in one place.

Model Garden's `BertEncoderV2` and `TransformerEncoderBlock` expose no public
handles on their sublayers, and BertEncoderV2 has no block factory, so
adapters, weight loaders, the multi-task bank and the frozen-bottom cache
reach into private attributes. They do it only through this module:
when tf-models-official is upgraded, this is the one file to check, and
tests/test_model_garden.py fails first if a name moved.

Names of the pinned versions:

* BertEncoderV2: `_embedding_layer`, `_position_embedding_layer`,
  `_type_embedding_layer`, `_embedding_norm_layer`, `_embedding_projection`,
  `_transformer_layers`, `_pooler_layer`, `_attention_mask_layer`,
  `_output_range`, `_get_embeddings(...)`, `_config`.
* TransformerEncoderBlock: `_attention_layer` (with `_query_dense`,
  `_key_dense`, `_value_dense`, `_output_dense`), `_attention_dropout`,
  `_attention_layer_norm`, `_intermediate_dense`, `_output_dense`,
  `_output_dropout`, `_output_layer_norm`.
* tf1_bert_checkpoint_converter_lib: `_bert_name_replacement`, `_get_new_shape`,
  `_get_permutation`; squad_evaluate_v1_1: `_normalize_answer`, `_f1_score`,
  `_exact_match_score`.
* tf_keras: `Layer._flatten_layers`, `Layer._trainable_weights` / `_non_trainable_weights` (one variable
  frozen at a time), a dropout layer's `_random_generator._generator` (and its `_maybe_init`),
  `CallbackList._check_timing`, MultiHeadAttention's masked softmax `_softmax` (prefix tuning widens its mask).
* keras-tuner 1.4.8: GridSearchOracle's `_compare`, `_ordered_ids`, `_populate_next` and
  `keras_tuner.src.tuners.gridsearch.LinkedList` (a reloaded grid's position), `keras_tuner.src.distribute.utils`.
"""
# pylint: disable=protected-access
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

# ---------------------------------------------------------------- TransformerEncoderBlock
# The attributes an adapter block wraps or taps (layers/block.py): the paper's
# two adapter points are the outputs of the two dropouts; parallel adapters
# read the inputs of the attention layer and of the FFN's first projection.
ATTENTION_OUTPUT_DROPOUT = "_attention_dropout"
FFN_OUTPUT_DROPOUT = "_output_dropout"
ATTENTION_LAYER = "_attention_layer"
FFN_INTERMEDIATE_DENSE = "_intermediate_dense"
# The block's last sublayer: its output is the block's output (post-LayerNorm blocks).
BLOCK_OUTPUT_LAYER_NORM = "_output_layer_norm"
# The keyword under which the block passes the attention layer its input.
ATTENTION_INPUT_KEYWORD = "query"
# Pre-trained, frozen sublayers a task block shares with a base block (serving/multitask.py): the FFN's
# projections, and inside the task's own attention layer its four projections (ATTENTION_PROJECTIONS). The
# attention layer itself stays the task's, so that a method may wrap its projections or its softmax for one task.
SHARED_BLOCK_SUBLAYERS = ("_intermediate_dense", "_output_dense")
# ... and those of the encoder.
SHARED_ENCODER_SUBLAYERS = ("_embedding_layer", "_position_embedding_layer", "_type_embedding_layer",
                            "_pooler_layer")


def attention_projections(block) -> Dict[str, object]:
  """{"query", "key", "value", "output"}: the attention layer's EinsumDense projections."""
  attention = block._attention_layer
  return dict(query=attention._query_dense, key=attention._key_dense, value=attention._value_dense,
              output=attention._output_dense)


# The projections a method may wrap (methods/sites.py): the attention layer's four and the FFN's two.
ATTENTION_PROJECTIONS = {"query": "_query_dense", "key": "_key_dense", "value": "_value_dense",
                         "attention_output": "_output_dense"}
FFN_PROJECTIONS = {"ffn_in": "_intermediate_dense", "ffn_out": "_output_dense"}


def projection_owner(block, target: str):
  """(the layer holding the projection `target`, its attribute there): the attention layer for the attention
  projections (behind a parallel adapter's input tap, the tapped layer), the block for the FFN's."""
  if target in FFN_PROJECTIONS:
    return block, FFN_PROJECTIONS[target]
  attention = block._attention_layer
  attention = attention.__dict__.get("sublayer", attention)  # a SublayerInputTap forwards reads, not writes
  return attention, ATTENTION_PROJECTIONS[target]


# tf_keras MultiHeadAttention's masked softmax (built from the first call's shapes): it takes the scores
# [B, N, T, S] and the attention mask, already combined with any Keras masks and expanded to [B, 1, T, S].
ATTENTION_SOFTMAX = "_softmax"


def attention_softmax_owner(block):
  """(the attention layer of a built block, behind a parallel adapter's input tap; its softmax's attribute)."""
  attention, _ = projection_owner(block, "query")
  if not hasattr(attention, ATTENTION_SOFTMAX):
    raise ValueError(f"the attention layer {attention.name} of block {block.name} has no masked softmax "
                     f"({type(attention).__name__} is not tf_keras's MultiHeadAttention, or is not built)")
  return attention, ATTENTION_SOFTMAX


def block_layer_norms(block) -> List[object]:
  """[the LayerNorm after attention, the LayerNorm after the FFN]."""
  return [block._attention_layer_norm, block._output_layer_norm]


def ffn_projections(block) -> List[object]:
  """[the FFN's intermediate Dense, its output Dense]."""
  return [block._intermediate_dense, block._output_dense]


# ---------------------------------------------------------------- BertEncoderV2


def replace_transformer_layers(encoder, blocks: Sequence[object]) -> None:
  """Swaps an unbuilt encoder's Transformer blocks (BertEncoderV2 has no block factory)."""
  encoder._transformer_layers = list(blocks)


def encoder_hidden_size(encoder) -> int:
  return encoder._config["hidden_size"]


def word_embedding(encoder):
  return encoder._embedding_layer


def position_embedding(encoder):
  return encoder._position_embedding_layer


def type_embedding(encoder):
  return encoder._type_embedding_layer


def embedding_layer_norm(encoder):
  return encoder._embedding_norm_layer


def pooler_dense(encoder):
  return encoder._pooler_layer


def embedding_layers(encoder) -> List[object]:
  """The layers that compute the embeddings: word, position, type, LayerNorm (+ projection)."""
  layers = [encoder._embedding_layer, encoder._position_embedding_layer, encoder._type_embedding_layer,
            encoder._embedding_norm_layer]
  if encoder._embedding_projection is not None:
    layers.append(encoder._embedding_projection)
  return layers


def embed(encoder, word_ids, type_ids):
  """BertEncoderV2.call up to the first block, in inference mode (the embedding dropout is the identity)."""
  return normalize_embeddings(encoder, embedding_sum(encoder, word_ids, type_ids))


def embedding_sum(encoder, word_ids, type_ids):
  """The word + position + type embeddings, before the embedding LayerNorm: the part of `embed` that only
  looks up the lookup tables (what the tasks of a multi-task bank share, networks/shared_bottom.py)."""
  return encoder._get_embeddings(word_ids, type_ids, None, None, None)


def normalize_embeddings(encoder, embeddings):
  """The rest of `embed`: the embedding LayerNorm (and projection, if any) of `embedding_sum`'s output."""
  embeddings = encoder._embedding_norm_layer(embeddings)
  if encoder._embedding_projection is not None:
    embeddings = encoder._embedding_projection(embeddings)
  return embeddings


def shares_embedding_lookups(encoder, other) -> bool:
  """Whether two encoders look up their word, position and type embeddings with the same layer objects (the
  tasks of a multi-task bank do: share_sublayers)."""
  return all(getattr(encoder, name) is getattr(other, name) for name in SHARED_ENCODER_SUBLAYERS[:3])


def attention_mask(encoder, embeddings, input_mask):
  """The [batch, seq, seq] attention mask BertEncoderV2 gives its blocks."""
  return encoder._attention_mask_layer(embeddings, input_mask)


def output_range(encoder) -> Optional[int]:
  """The last block's output_range argument (None: every position)."""
  return encoder._output_range


def has_embedding_projection(encoder) -> bool:
  return encoder._embedding_projection is not None


def share_sublayers(task_encoder, base_encoder) -> None:
  """Points `task_encoder` at the base's frozen embedding and pooler layers and, block by block,
  its attention and FFN projections; copies the base's LayerNorm values (they stay per task). Both encoders
  are plain (a method is injected into the task encoder afterwards), so a projection found here is the
  pre-trained EinsumDense itself."""
  for name in SHARED_ENCODER_SUBLAYERS:
    setattr(task_encoder, name, getattr(base_encoder, name))
  task_encoder._embedding_norm_layer.set_weights(base_encoder._embedding_norm_layer.get_weights())
  for task_block, base_block in zip(task_encoder.transformer_layers, base_encoder.transformer_layers):
    for name in SHARED_BLOCK_SUBLAYERS:
      task_block.set_base_sublayer(name, getattr(base_block, name))
    for target, attribute in ATTENTION_PROJECTIONS.items():
      task_attention, _ = projection_owner(task_block, target)
      base_attention, _ = projection_owner(base_block, target)
      setattr(task_attention, attribute, getattr(base_attention, attribute))
    for task_norm, base_norm in zip(block_layer_norms(task_block), block_layer_norms(base_block)):
      task_norm.set_weights(base_norm.get_weights())


# ---------------------------------------------------------------- tf_keras


def child_layers(layer) -> List[object]:
  """The direct sublayers of a tf_keras layer, in tracking order."""
  return list(layer._flatten_layers(include_self=False, recursive=False))


def own_trainable_candidates(layer) -> List[object]:
  """The variables `layer` itself created as trainable (not its sublayers'), including any that
  `freeze_variable` set aside: what a tuning method decides on, variable by variable."""
  return list(layer._trainable_weights) + list(getattr(layer, _FROZEN_ONE_BY_ONE, []))


def own_variables(layer) -> List[object]:
  """Every variable `layer` itself holds (not its sublayers')."""
  return list(layer._trainable_weights) + list(layer._non_trainable_weights)


# Where freeze_variable keeps the variables it moved, so that unfreeze_variables can move them back.
_FROZEN_ONE_BY_ONE = "_adapter_keras_frozen_variables"


def freeze_variable(layer, variable) -> None:
  """Makes one variable of a trainable layer non-trainable, leaving its siblings as they are.

  tf_keras decides trainability per layer (a Dense's kernel and bias share `trainable`); its
  trainable_weights are the layer's `_trainable_weights` list, so moving the variable to
  `_non_trainable_weights` is what freezes it for every model that contains the layer.
  """
  frozen = layer.__dict__.setdefault(_FROZEN_ONE_BY_ONE, [])
  layer._trainable_weights.remove(variable)
  layer._non_trainable_weights.append(variable)
  frozen.append(variable)


def unfreeze_variables(layer) -> None:
  """Undoes every freeze_variable on `layer`."""
  for variable in layer.__dict__.pop(_FROZEN_ONE_BY_ONE, []):
    layer._non_trainable_weights.remove(variable)
    layer._trainable_weights.append(variable)


def all_sublayers(layer) -> List[object]:
  """Every sublayer of a tf_keras layer, recursively (not the layer itself)."""
  return list(layer._flatten_layers(include_self=False))


def dropout_generator_state(layer):
  """The state variable of the tf.random.Generator behind a layer's dropout, or None.

  Only layers built inside tf_keras's tf-random-generator mode have one
  (train/checkpoints.py: resumable_randomness).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  generator = getattr(layer, "_random_generator", None)
  if generator is None or not hasattr(generator, "_maybe_init"):
    return None
  generator._maybe_init()
  tf_generator = getattr(generator, "_generator", None)
  return tf_generator.state if isinstance(tf_generator, tf.random.Generator) else None


# ---------------------------------------------------------------- the official SQuAD v1.1 scorer
# official/nlp/tools/squad_evaluate_v1_1.py is evaluate-v1.1.py; its per-answer functions are private.


def squad_normalize_answer(text: str) -> str:
  from official.nlp.tools import squad_evaluate_v1_1  # pylint: disable=import-outside-toplevel
  return squad_evaluate_v1_1._normalize_answer(text)


def squad_f1_score(prediction: str, ground_truth: str) -> float:
  from official.nlp.tools import squad_evaluate_v1_1  # pylint: disable=import-outside-toplevel
  return float(squad_evaluate_v1_1._f1_score(prediction, ground_truth))


def squad_exact_match_score(prediction: str, ground_truth: str) -> float:
  from official.nlp.tools import squad_evaluate_v1_1  # pylint: disable=import-outside-toplevel
  return float(squad_evaluate_v1_1._exact_match_score(prediction, ground_truth))


# ---------------------------------------------------------------- Google's original TF1 BERT names
# official/nlp/tools/tf1_bert_checkpoint_converter_lib.py maps original BERT names to BertEncoder's and
# reshapes the attention kernels; its per-variable steps are private (its public `convert` writes a
# whole converted checkpoint to disk, a second copy of the weights we do not need).


def tf1_bert_to_model_garden(name: str, value, num_heads: int):
  """(Model Garden name, value in Model Garden's shape) of one original-BERT TF1 variable."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from official.nlp.tools import tf1_bert_checkpoint_converter_lib as converter  # pylint: disable=import-outside-toplevel
  new_name = converter._bert_name_replacement(name, converter.BERT_V2_NAME_REPLACEMENTS)
  new_shape = converter._get_new_shape(new_name, value.shape, num_heads)
  if new_shape:
    try:
      value = np.reshape(value, new_shape)
    except ValueError:
      pass  # a mis-shaped tensor: the strict check names it with its original shape
  permutation = converter._get_permutation(name, converter.BERT_V2_PERMUTATIONS)
  if permutation:
    value = np.transpose(value, permutation)
  return new_name, value


def disable_batch_hook_timing(callback_list) -> None:
  """Turns off tf_keras's warning that batch-end callbacks are slow (a step checkpoint is slow by design)."""
  callback_list._check_timing = False


# ---------------------------------------------------------------- keras-tuner


def restore_grid_position(oracle) -> None:
  """Rebuilds a reloaded GridSearchOracle's place in its grid from the trials on disk.

  keras-tuner 1.4.8 keeps it in memory only (the trials in grid order and those whose successor is still
  to be tried); a reloaded oracle that has trials but no such list ends the search at once.
  """
  import functools  # pylint: disable=import-outside-toplevel
  from keras_tuner.src.tuners.gridsearch import LinkedList  # pylint: disable=import-outside-toplevel
  order = functools.cmp_to_key(
      lambda a, b: oracle._compare(oracle.trials[a].hyperparameters.values, oracle.trials[b].hyperparameters.values))
  started = sorted((trial_id for trial_id in dict.fromkeys(oracle.start_order) if trial_id in oracle.trials),
                   key=order)
  oracle._ordered_ids = LinkedList()
  for trial_id in started:
    oracle._ordered_ids.insert(trial_id)
  oracle._populate_next = list(started)


def keras_tuner_distribution():
  """keras-tuner's module that says whether this process is its chief or a worker (`has_chief_oracle`,
  `is_chief_oracle`): it has no public name."""
  from keras_tuner.src.distribute import utils  # pylint: disable=import-outside-toplevel
  return utils
