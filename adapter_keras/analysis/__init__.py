"""The paper's analyses of adapters (section 3.4) and the Table-1 report.

* ablation.py: remove the adapters of every layer span of a trained model (Fig. 5), or of several
  (seeds), averaged with the s.e.m. per cell;
* init_scale.py: the metric against the adapters' initialisation std (Fig. 6);
* tradeoff.py: the metric against trained parameters for adapters, top-k and LayerNorm-only
  (Figs. 3-4), over learning rates and seeds: each point's learning rate tuned on its mean over seeds;
* report.py: Table-1-style markdown from finished runs;
* common.py: the recorded training runs, plotting and result files they share.

Each study returns a JSON-able dict and has a plot function writing a PNG
(matplotlib, Agg backend). Training studies keep every finished run under
`<out>/runs/`, so an interrupted study resumes where it stopped.
"""
