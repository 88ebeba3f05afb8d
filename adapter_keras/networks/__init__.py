"""Task models on an adapter encoder: classification/regression (TaskModel), extractive QA
(SpanModel), token classification (TokenModel), and the TaskModel split at a layer for the frozen-bottom
cache (FrozenBottomModel)."""
from adapter_keras.networks.frozen_bottom import FrozenBottomModel
from adapter_keras.networks.span_model import MASKED_LOGIT, SPAN_TASK_TYPE, SpanModel, build_span_model
from adapter_keras.networks.task_model import TASK_TYPES, TaskModel, build_task_model
from adapter_keras.networks.token_model import TokenModel

__all__ = ["TaskModel", "SpanModel", "TokenModel", "FrozenBottomModel", "build_task_model", "build_span_model",
           "MASKED_LOGIT", "SPAN_TASK_TYPE", "TASK_TYPES"]
