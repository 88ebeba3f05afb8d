"""Task models on an adapter encoder: classification/regression (TaskModel), extractive QA
(SpanModel), token classification (TokenModel), the TaskModel split at a layer for the frozen-bottom
cache (FrozenBottomModel), and tasks on one base split where they first differ (shared_bottom: SharedBottom,
own_top, shared_depth)."""
from adapter_keras.networks.frozen_bottom import FrozenBottomModel
from adapter_keras.networks.shared_bottom import SharedBottom, own_top, shared_depth, untouched_layers
from adapter_keras.networks.span_model import MASKED_LOGIT, SPAN_TASK_TYPE, SpanModel, build_span_model
from adapter_keras.networks.task_model import TASK_TYPES, TaskModel, build_task_model
from adapter_keras.networks.token_model import TokenModel

__all__ = ["TaskModel", "SpanModel", "TokenModel", "FrozenBottomModel", "SharedBottom", "own_top", "shared_depth",
           "untouched_layers", "build_task_model", "build_span_model",
           "MASKED_LOGIT", "SPAN_TASK_TYPE", "TASK_TYPES"]
