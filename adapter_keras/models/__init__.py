"""Task models: one tf_keras.Model from construction to artifact, used by the Keras front door and the
command line alike (base.py: what they share, the task type -> class registry and `load_adapter`, the one loader;
classifier.py: AdapterClassifier, AdapterRegressor; span_extractor.py: AdapterSpanExtractor;
token_classifier.py: AdapterTokenClassifier; inputs.py: raw inputs; keras3.py: Keras 3 objects refused with
the fix named). Importing the package registers the four task types.

They sit above train/'s recipes and `fit` (their fit on raw inputs is the command line's) and below
train/run.py, serving/ and analysis/, which build, load and serve them.
"""
from adapter_keras.models.base import TASK_MODELS, TaskModelBase, build_for_task, load_adapter, model_class
from adapter_keras.models.classifier import AdapterClassifier, AdapterRegressor
from adapter_keras.models.span_extractor import AdapterSpanExtractor
from adapter_keras.models.token_classifier import AdapterTokenClassifier

__all__ = ["TaskModelBase", "AdapterClassifier", "AdapterRegressor", "AdapterSpanExtractor", "AdapterTokenClassifier",
           "TASK_MODELS", "build_for_task", "load_adapter", "model_class"]
