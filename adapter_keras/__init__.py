"""adapter_keras: Houlsby adapters for TensorFlow Model Garden BERT encoders."""
__version__ = "0.1.0"
