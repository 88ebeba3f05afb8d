"""The `adapter-keras train-squad` and `evaluate-squad` subcommands (SQuAD v1.1).

`add_parsers(subparsers)` adds both to the main parser; each sets `func`,
which returns a JSON-able dict (printed as the last stdout line with --json,
like every other command). The runs themselves live in train/squad.py.
"""
from __future__ import annotations

from typing import Dict

from adapter_keras.train.config import SquadTrainConfig
from adapter_keras.cli.flags import add_checkpoint_argument, add_training_arguments, positive_int, train_config_kwargs


def _train_config(args):
  return SquadTrainConfig(**train_config_kwargs(
      args, doc_stride=args.doc_stride, max_query_length=args.max_query_length,
      max_answer_length=args.max_answer_length))


def _shown(metrics: Dict[str, float]) -> str:
  return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _cmd_train_squad(args) -> Dict:
  from adapter_keras.train import squad as squad_training  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import train_squad  # pylint: disable=import-outside-toplevel
  config = _train_config(args)
  train = squad_training.read_squad_file(args.train, "--train")
  dev = squad_training.read_squad_file(args.dev, "--dev")
  result, _ = train_squad(train, dev, config, out_dir=args.out, checkpoint_every_steps=args.checkpoint_every)
  print(f"[train-squad] best epoch {result.best_epoch}: {_shown(result.metrics)}; wrote {args.out}")
  return result.summary(args.out)


def _cmd_evaluate_squad(args) -> Dict:
  from adapter_keras.models.span_extractor import evaluate_squad_artifact  # pylint: disable=import-outside-toplevel
  from adapter_keras.train import squad as squad_training  # pylint: disable=import-outside-toplevel
  dev = squad_training.read_squad_file(args.dev, "--dev")
  metrics, answers = evaluate_squad_artifact(args.artifact, dev, args.encoder)
  if args.predictions_out:
    squad_training.write_predictions(args.predictions_out, answers)
  print(f"squad dev ({len(dev)} questions): {_shown(metrics)}"
        + (f"; wrote {args.predictions_out}" if args.predictions_out else ""))
  return dict(task="squad", metrics=metrics, primary_metric="f1", score=metrics["f1"], questions=len(dev),
              predictions_out=args.predictions_out)


def add_parsers(subparsers) -> None:
  """Adds `train-squad` and `evaluate-squad` to the main parser's subparsers."""
  p = subparsers.add_parser(
      "train-squad", help="train a span model on SQuAD v1.1, keep the best epoch by dev F1, save it",
      description="Extractive QA on SQuAD v1.1 files: max-length windows with a stride, a start/end "
                  "head, the paper's recipe; dev EM/F1 after every epoch, best epoch by F1.")
  p.add_argument("--train", required=True, help="train-v1.1.json")
  p.add_argument("--dev", required=True, help="dev-v1.1.json")
  # No --pooling (the span head reads every token) and no prefix cache
  # (FrozenBottomModel takes classification/regression models).
  add_training_arguments(p, max_seq_length=None, pooling=False, prefix_cache=False)
  g = p.add_argument_group("windows and answers")
  defaults = SquadTrainConfig()
  g.add_argument("--max-seq-length", type=positive_int, default=defaults.max_seq_length,
                 help="tokens per window, [CLS]/[SEP] included")
  g.add_argument("--doc-stride", type=positive_int, default=defaults.doc_stride, help="tokens between window starts")
  g.add_argument("--max-query-length", type=positive_int, default=defaults.max_query_length,
                 help="question tokens kept")
  g.add_argument("--max-answer-length", type=positive_int, default=defaults.max_answer_length,
                 help="longest answer, in tokens")
  p.add_argument("--out", required=True, help="output directory")
  add_checkpoint_argument(p)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_train_squad)

  p = subparsers.add_parser("evaluate-squad", help="EM/F1 of a train-squad model on a SQuAD v1.1 file")
  p.add_argument("--artifact", required=True,
                 help="the artifact directory train-squad wrote, or its run directory")
  p.add_argument("--encoder", help="the base encoder it was trained on (default: the one its manifest names, if "
                                    "a named offline encoder such as minilm-l6: an artifact's own files never choose "
                                    "what is loaded)")
  p.add_argument("--dev", required=True, help="dev-v1.1.json")
  p.add_argument("--predictions-out", metavar="FILE",
                 help="write {question id: answer} here, the input of the official evaluate-v1.1.py")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_evaluate_squad)

