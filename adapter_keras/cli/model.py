"""`adapter-keras params` (parameter counts of an architecture or encoder) and `adapter-keras demo`."""
from __future__ import annotations

import os

from adapter_keras.cli.flags import ARCHITECTURES, ENCODER_HELP, POOLINGS, learning_rate, positive_int
from adapter_keras.cli.flags import (adapter_config_from_args, add_adapter_arguments, add_method_config_argument,
                                     method_config_from_args)
from adapter_keras.methods import method_names
from adapter_keras.train.config import TrainConfig

DEFAULTS = TrainConfig()  # the command line's defaults are the library's


def _cmd_params(args) -> dict:
  from adapter_keras.encoder import ARCHITECTURES, build_encoder  # pylint: disable=import-outside-toplevel
  from adapter_keras.methods import apply_method, get_method, inject_method, parameter_report  # pylint: disable=import-outside-toplevel
  from adapter_keras.networks import TaskModel, TokenModel  # pylint: disable=import-outside-toplevel
  from adapter_keras.models.sources import read_sources  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel

  method = get_method(args.method)
  settings = method.make_config(method_config_from_args(args), adapter=adapter_config_from_args(args),
                                top_k=args.top_k)
  if method.source_artifacts(settings) and args.arch:
    raise ValueError(f"--method {args.method} reads its source artifacts, which need the base they were trained "
                     "on: give it with --encoder, not --arch")
  if args.arch:
    bert_config = ARCHITECTURES[args.arch]
    encoder = build_encoder(bert_config)
    pooling = args.pooling or ("mean" if args.arch == "minilm-l6" else "cls")
  else:
    pretrained = load_encoder(args.encoder)
    bert_config, encoder = pretrained.config, pretrained.encoder
    pooling = args.pooling or pretrained.default_pooling
    settings = read_sources(args.method, settings, pretrained)
  inject_method(encoder, args.method, settings, seed=0)
  if args.task_type == "token":  # a Dense(num_labels) on every token; no pooled vector, so no pooler
    model = TokenModel(encoder, args.num_labels)
  else:
    task_type = "regression" if args.num_labels == 1 else "classification"
    model = TaskModel(encoder, args.num_labels, task_type=task_type, pooling=pooling)
  model.build_with_dummy_inputs()
  apply_method(model, args.method, config=settings)
  report = parameter_report(model)
  print(f"{'base (pre-trained encoder)':<30}{report.base_params:>14,}")
  print(f"{'adapters':<30}{report.adapter_params:>14,}")
  print(f"{'layer norms':<30}{report.layer_norm_params:>14,}")
  print(f"{'head':<30}{report.head_params:>14,}")
  print(f"{'trained (method ' + args.method + ')':<30}{report.trained_params:>14,}"
        f"  ({100 * report.trained_fraction:.3f}% of base)")
  return report.to_dict()


def _cmd_demo(args) -> dict:
  from adapter_keras.demo import run_demo  # pylint: disable=import-outside-toplevel
  return run_demo(out_dir=args.out, encoder=args.encoder, epochs=args.epochs,
                  topic_epochs=args.topic_epochs, learning_rate=args.learning_rate,
                  adapter_size=args.adapter_size, seed=args.seed,
                  max_train_examples=args.max_train_examples)


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser("params", help="parameter report for an architecture or encoder")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--arch", choices=ARCHITECTURES,
                      help="count a randomly initialised architecture")
  source.add_argument("--encoder", help="count a pre-trained encoder: " + ENCODER_HELP)
  add_adapter_arguments(p)
  p.add_argument("--num-labels", type=positive_int, default=2, help="1 = regression (token tasks: tags)")
  p.add_argument("--task-type", choices=("classification", "token"), default="classification",
                 help="token: a per-token tagging head of --num-labels tags")
  p.add_argument("--method", default=DEFAULTS.method, choices=method_names())
  add_method_config_argument(p)
  p.add_argument("--top-k", type=positive_int)
  p.add_argument("--pooling", choices=POOLINGS,
                 help="default: mean for MiniLM, else the pooled [CLS] output")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_params)

  p = subparsers.add_parser("demo", help="two adapter tasks on one frozen MiniLM, then export (offline)")
  p.add_argument("--out", default=os.path.join("runs", "demo"))
  p.add_argument("--encoder", default=DEFAULTS.encoder)
  p.add_argument("--epochs", type=positive_int, default=2, help="epochs for Rotten Tomatoes")
  p.add_argument("--topic-epochs", type=positive_int, default=1, help="epochs for BBC News")
  p.add_argument("--learning-rate", type=learning_rate, default=1e-3)
  p.add_argument("--adapter-size", type=positive_int, default=DEFAULTS.adapter.size)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-train-examples", type=positive_int)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_demo)
