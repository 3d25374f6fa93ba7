"""Figures of a trained work dir: predictions, confusion matrix, training curves.

  python -m jaxseg.tools.visualize --workdir runs/quick --num 4
  python -m jaxseg.tools.visualize --workdir runs/voc --num 8 --eval_images 200 --out figs/

writes to --out (default WORKDIR/visualize):
  predictions.png  the first --num validation images: image | ground truth | prediction
                   | errors (red: wrong, white: ignored), dataset palette and a legend
  confusion.png    the confusion matrix of the latest checkpoint on the eval split
                   (rows: ground truth, % of each row), class names on both axes
  loss.png         loss and its terms over steps (train_log.jsonl)
  miou.png         mIoU, aAcc and mAcc over steps (metrics.jsonl)
The config is the work dir's config.json; --config.* overrides are not taken here.
"""
from __future__ import annotations

import itertools
import json
import os

import numpy as np

from jaxseg.tools import draw


def read_jsonl(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def curves(workdir):
  """{"loss": (image, plotted), "miou": (image, plotted)}: the series plotted, name
  -> (steps, values), come straight from train_log.jsonl and metrics.jsonl."""
  log = read_jsonl(os.path.join(workdir, "train_log.jsonl"))
  evals = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  terms = ["loss"] + sorted({k for r in log for k in r if k.startswith("loss_")})
  series = lambda rows, key: ([r["step"] for r in rows if r.get(key) is not None],
                              [r[key] for r in rows if r.get(key) is not None])
  loss = draw.line_plot({k: series(log, k) for k in terms}, "training loss", "step", "loss")
  miou = draw.line_plot({k: series(evals, k) for k in ("miou", "aacc", "macc")}, "evaluation", "step",
                        "score", ylim=(0.0, 1.0))
  return {"loss": loss, "miou": miou}


class _Context:
  """The trained segmenter of a work dir and its dataset."""

  def __init__(self, workdir):
    import jaxseg
    from jaxseg.data import datasets

    self.seg = jaxseg.load(workdir)
    self.config = c = self.seg.config
    self.builder = datasets.load(c.dataset.name, c.dataset.data_dir)
    self.source = datasets.source(self.builder, c.dataset.eval_split)
    self.names = datasets.class_names(self.builder, c.dataset.num_classes)
    self.palette = datasets.palette(c.dataset.num_classes, self.builder)


def predictions_figure(ctx, num=4):
  """(RGB figure, (images, labels, predictions)) of the first `num` eval images."""
  from jaxseg.data import pipeline

  c = ctx.config
  seg = ctx.seg
  batch = next(pipeline.eval_batches(c, ctx.source, min(num, len(ctx.source)), family=seg.family, num_workers=0))
  if "label_size" in batch:  # resized eval images: predicted at the stored label's size
    import jax
    preds = np.asarray(jax.jit(lambda v, b: seg.family.predict(seg.model, v, b)["pred"])(seg.variables, batch))
  else:
    preds = seg.predict(batch["image"])
  shown = seg.family.shown(batch, preds)
  rows = [draw.prediction_row(i, l, p, ctx.palette, c.dataset.ignore_index) for i, l, p in shown]
  grid = draw.grid(rows, draw.PREDICTION_TITLES)
  legend = draw.legend(ctx.names, ctx.palette, grid.shape[1])
  images, labels, preds = (np.stack(x) for x in zip(*shown))
  return draw.stack(grid, legend), (images, labels, preds)


def confusion(ctx, max_images=0):
  """The (K, K) confusion matrix of the checkpoint on the eval split (its first
  `max_images` images; 0 = all) and the scores."""
  import jax

  from jaxseg import sharding
  from jaxseg.data import pipeline
  from jaxseg.evaluate import ConfusionMatrix, Evaluation

  c, seg = ctx.config, ctx.seg
  size = sharding.eval_batch_size(c)
  batches = pipeline.eval_batches(c, ctx.source, size, jax.process_index(), jax.process_count())
  if max_images:
    batches = itertools.islice(batches, -(-max_images // size))
  evaluation = Evaluation(lambda v, batch: seg.family.predict(seg.model, v, batch),
                          {"confusion": ConfusionMatrix(c.dataset.num_classes, c.dataset.ignore_index)},
                          seg.replicated)
  scores, accs = evaluation(seg.variables, batches, lambda b: sharding.global_batch(b, seg.data_sharding))
  return accs["confusion"], scores


def write_all(workdir, output=None, num=4, eval_images=0):
  """Writes the four figures; returns {name: path} and the data behind them."""
  output = output or os.path.join(workdir, "visualize")
  os.makedirs(output, exist_ok=True)
  paths, data = {}, {}
  ctx = _Context(workdir)
  image, data["predictions"] = predictions_figure(ctx, num)
  paths["predictions"] = os.path.join(output, "predictions.png")
  draw.save_png(paths["predictions"], image)
  cm, scores = confusion(ctx, eval_images)
  data["confusion"] = cm
  paths["confusion"] = os.path.join(output, "confusion.png")
  split = f"'{ctx.config.dataset.eval_split}'" + (f" (first {eval_images} images)" if eval_images else "")
  title = f"step {ctx.seg.step} on {split}: mIoU {scores['miou']:.4f}, aAcc {scores['aacc']:.4f}"
  draw.save_png(paths["confusion"], draw.heatmap(cm, ctx.names, title))
  for name, (image, plotted) in curves(workdir).items():
    paths[name] = os.path.join(output, f"{name}.png")
    data[name] = plotted
    draw.save_png(paths[name], image)
  return paths, data


def define_flags():
  from absl import flags
  flags.DEFINE_integer("num", 4, "Validation images in predictions.png.")
  flags.DEFINE_integer("eval_images", 0, "Images of the eval split for confusion.png (0 = all).")
  flags.DEFINE_string("out", "", "Output folder (default WORKDIR/visualize).")


def main(argv):
  from absl import app, flags, logging
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  logging.set_verbosity(logging.WARNING)
  paths, _ = write_all(f.workdir, f.out or None, f.num, f.eval_images)
  for path in paths.values():
    print(f"wrote {path}")


if __name__ == "__main__":
  from jaxseg.main import run
  define_flags()
  run(main)
