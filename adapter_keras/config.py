"""The public import path of the tuning methods' configs: `from adapter_keras.config import AdapterConfig`.

Each config is defined in its method's folder (methods/<method>/); this module only gathers the
built-in ones under the name users and notebooks have imported since 0.1.0.
"""
from adapter_keras.methods.adapter.config import (ACTIVATIONS, INTERACTIONS, NORMS, PLACEMENTS, POSITIONS,
                                                  AdapterConfig)
from adapter_keras.methods.base import NoConfig, SourceRef
from adapter_keras.methods.fusion import FusionConfig
from adapter_keras.methods.ia3 import IA3Config
from adapter_keras.methods.lora import LoRAConfig
from adapter_keras.methods.prefix_tuning import PrefixTuningConfig
from adapter_keras.methods.stack import StackConfig
from adapter_keras.methods.top_k import TopKConfig

__all__ = ["AdapterConfig", "TopKConfig", "LoRAConfig", "IA3Config", "PrefixTuningConfig", "FusionConfig",
           "StackConfig", "SourceRef", "NoConfig", "ACTIVATIONS", "INTERACTIONS", "NORMS", "PLACEMENTS", "POSITIONS"]
