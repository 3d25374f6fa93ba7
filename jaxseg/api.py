"""`jaxseg.load(workdir)`: a trained segmenter from a work dir, ready to predict."""
from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import checkpoint, sharding
from jaxseg.data.transforms import canny
from jaxseg.errors import NoCheckpointError
from jaxseg.evaluate import predict_scores
from jaxseg.models.segmentor import build_model


class Segmenter:
  """`.logits(images)` -> (B, H, W, K) float32 scores at the input resolution;
  `.predict(images)` -> (B, H, W) int32 class ids. `images` are uint8 RGB (B, H, W, 3)
  of any size; normalisation and the config's inference mode (whole / slide /
  multi-scale + flip) happen inside."""

  def __init__(self, config, variables, step, mesh):
    self.config, self.variables, self.step = config, variables, step
    self.model = build_model(config, config.model.eval_output_stride)
    self.data_sharding, self.replicated = sharding.data_sharding(mesh), sharding.replicated(mesh)
    self._logits = jax.jit(lambda v, x, e: predict_scores(self.model, v, x, config, e))

  def _check(self, images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
    return images

  def logits(self, images):
    images = self._check(images)
    edges = None
    if self.config.input.get("canny_edges", False):  # Gated-SCNN: Canny of the raw images, on the host
      edges = jnp.asarray(np.stack([canny(im, self.config.input.canny_thresholds) for im in images]))
    return np.asarray(self._logits(self.variables, jnp.asarray(images), edges))

  def predict(self, images):
    return self.logits(images).argmax(-1).astype(np.int32)


def workdir_config(workdir):
  """The config saved in WORKDIR/config.json."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise NoCheckpointError(f"{path} not found: is {workdir} a jaxseg work dir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load(workdir, config=None, step=None) -> Segmenter:
  """The segmenter of checkpoint `step` (default: the latest) in `workdir`, built from
  `config` (default: the work dir's config.json)."""
  from jaxseg.train import state_factory  # train imports this module's users

  if config is None:
    config = workdir_config(workdir)
  else:
    checkpoint.check_same_model(workdir, config)
  converted = os.path.join(workdir, "converted.json")
  if os.path.exists(converted) and json.load(open(converted)).get("backbone_only"):
    raise NoCheckpointError(f"{workdir} holds a converted backbone, not a segmentation model: "
                            "train from it with --config.model.init_from")
  mngr = checkpoint.manager(workdir, read_only=True)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise NoCheckpointError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first")
  # The training run's model axis where this machine's devices allow it, else a divisor.
  mesh = sharding.make_mesh(model=math.gcd(config.train.get("model_axis", 1), jax.device_count()))
  _, abstract_state, _, _ = state_factory(config, build_model(config))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, sharding.state_shardings(abstract_state, mesh))
  state, _ = checkpoint.restore(mngr, step, abstract)
  mngr.close()
  return Segmenter(config, {"params": state.params, "batch_stats": state.batch_stats}, step, mesh)
