"""Keras layers: the bottleneck adapter, the Transformer block that hosts it, pooling."""
from adapter_keras.methods.adapter.layers import BottleneckAdapter, SublayerWithAdapter
from adapter_keras.layers.block import AdapterTransformerEncoderBlock
from adapter_keras.layers.pooling import MeanPooling

__all__ = ["BottleneckAdapter", "SublayerWithAdapter", "AdapterTransformerEncoderBlock", "MeanPooling"]
