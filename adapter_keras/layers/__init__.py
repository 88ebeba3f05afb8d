"""Keras layers: the bottleneck adapter and the Transformer block that hosts it."""
from adapter_keras.layers.adapter import BottleneckAdapter, SublayerWithAdapter
from adapter_keras.layers.block import AdapterTransformerEncoderBlock

__all__ = ["BottleneckAdapter", "SublayerWithAdapter", "AdapterTransformerEncoderBlock"]
