"""Padding and distinct batch shapes of one training epoch, per padding mode (docs/performance.md).

  python benchmarks/padding_modes.py --data-dir ../shared/data/glue --task sst2

Tokenizes the task's training set with the encoder's vocabulary and, for
epoch 0 of seed 0 (train/inputs.epoch_order, length grouping on), prints the
share of the computed positions that are padding and the number of distinct
[batch, length] shapes (each one an XLA or TPU compilation) for: dynamic
padding (each batch to its longest example), dynamic padding rounded up to
JIT_PAD_MULTIPLE (the XLA mode without static shapes), and static shapes
(whole batches only) with the fixed lengths a run chooses from its train and
dev examples' lengths (static_batch_lengths; the recipe's default), the same
rounded to multiples of 8, and the powers of two up to max_seq_length (what
a run from training records uses). No model runs; it takes seconds.

  python benchmarks/padding_modes.py --data-dir ../shared/data/glue --task sst2 \
      --out-json docs/results/padding_modes.json
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.preprocessing import BertPreprocessor  # noqa: E402
from adapter_keras.pretrained import resolve_named_encoder  # noqa: E402
from adapter_keras.io import write_json_atomic  # noqa: E402
from adapter_keras.tasks.data import load_glue_split  # noqa: E402
from adapter_keras.tasks.registry import get_task  # noqa: E402
from adapter_keras.train import inputs  # noqa: E402


def padding_and_shapes(batches, lengths, padded_length):
  """(padding fraction of the computed positions, number of distinct batch shapes)."""
  real = computed = 0
  shapes = set()
  for batch in batches:
    length = int(padded_length(int(lengths[batch].max())))
    shapes.add((len(batch), length))
    real += int(lengths[batch].sum())
    computed += len(batch) * length
  return 1 - real / computed, len(shapes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True, help="a GLUE directory")
  parser.add_argument("--task", default="sst2")
  parser.add_argument("--encoder", default="minilm-l6", help="a named encoder or a directory with vocab.txt")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--max-seq-length", type=int, default=128)
  parser.add_argument("--out-json", help="also write the numbers here")
  args = parser.parse_args()
  directory = args.encoder if os.path.isdir(args.encoder) else resolve_named_encoder(args.encoder)
  preprocessor = BertPreprocessor(os.path.join(directory, "vocab.txt"), True, args.max_seq_length)
  lengths = inputs.encode_examples(preprocessor, load_glue_split(args.data_dir, args.task, "train")).lengths
  dev_lengths = [inputs.encode_examples(preprocessor, load_glue_split(args.data_dir, args.task, split)).lengths
                 for split in get_task(args.task).dev_splits]
  n, batch_size = len(lengths), args.batch_size
  print(f"{args.task} train: {n} examples, mean length {lengths.mean():.1f} tokens; batch {batch_size}, "
        f"max_seq_length {args.max_seq_length}")
  dynamic = inputs.epoch_order(n, 0, 0, lengths, batch_size)
  dynamic_batches = [dynamic[i:i + batch_size] for i in range(0, n, batch_size)]
  static = inputs.epoch_order(n, 0, 0, lengths, batch_size, drop_remainder=True).reshape(-1, batch_size)
  multiple, longest = inputs.JIT_PAD_MULTIPLE, int(lengths.max())

  def rounded_up(length):
    return min(-(-length // multiple) * multiple, longest)

  def static_mode(name, fixed):
    fixed = np.array(fixed)
    return (f"static, {name} {tuple(int(f) for f in fixed)}", static,
            lambda length: fixed[np.searchsorted(fixed, length)])

  every = [lengths] + dev_lengths
  modes = [("dynamic", dynamic_batches, lambda length: length),
           (f"dynamic, multiples of {multiple}", dynamic_batches, rounded_up),
           static_mode("from the data", inputs.static_batch_lengths(args.max_seq_length, every)),
           static_mode("from the data, multiples of 8", inputs.static_batch_lengths(args.max_seq_length, every,
                                                                                     multiple=8)),
           static_mode("powers of two", inputs.static_batch_lengths(args.max_seq_length))]
  rows = []
  for name, batches, padded_length in modes:
    padding, shapes = padding_and_shapes(batches, lengths, padded_length)
    print(f"{name}: {100 * padding:.1f}% padding, {shapes} distinct shapes, {len(batches)} batches")
    rows.append(dict(mode=name, padding=round(padding, 4), distinct_shapes=shapes, batches=len(batches)))
  if args.out_json:
    write_json_atomic(args.out_json, dict(
        command=run_grid.benchmark_command(__file__), task=args.task,
        encoder=args.encoder, train_examples=n, mean_length=round(float(lengths.mean()), 2),
        batch_size=batch_size, max_seq_length=args.max_seq_length, epoch=0, seed=0, modes=rows))


if __name__ == "__main__":
  main()
