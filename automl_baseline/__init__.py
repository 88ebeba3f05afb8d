"""The no-BERT AutoML baseline of Houlsby et al. (2019), Tables 5 and 6.

A keras-tuner search over wide & deep classifiers (a linear tower over hashed
n-grams plus a feed-forward or convolutional tower over a pre-trained TF Hub
text-embedding module), built with tf_keras. Modules: `search_space` (Table
5), `modules` (Table 6 handles, hub layers, the offline module builder),
`model`, `optimizers` (LazyAdam), `tuner`, `cli`.
"""
__version__ = "0.1.0"
