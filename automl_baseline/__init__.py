"""The no-BERT AutoML baseline of Houlsby et al. (2019), Tables 5 and 6.

A keras-tuner search over wide & deep classifiers (a linear tower over hashed
n-grams plus a feed-forward or convolutional tower over a pre-trained TF Hub
text-embedding module), built with tf_keras. Modules:

* `search_space`: Table 5, and a trial's configuration (`TrialConfig`);
* `modules`: Table 6's handles, their hub layers, the offline module builder;
* `towers`: the wide and deep towers and the model they make (`build_model`);
* `optimizers`: each tower's optimizer (FTRL; Adagrad or LazyAdam);
* `training`: a trial's budget, datasets and `train_and_evaluate`;
* `export`: the SavedModel taking raw strings, and predictions from it;
* `tuner`: the keras-tuner search and its reports (`run_search`);
* `cli`: the `automl-baseline` command.

Files and directories are written through `adapter_keras.io` (atomic writes)
and data is read through `adapter_keras.tasks` (GLUE tasks and files).
"""
__version__ = "0.1.0"
# tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE) for every serializable class here.
KERAS_PACKAGE = "AutoMLBaseline"
