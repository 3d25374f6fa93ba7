"""`jaxseg.load(workdir)`: a trained model from a work dir, ready to predict, and
`evaluate(workdir)`, what `--mode eval` runs. Both go through the config's task
family (jaxseg.families)."""
from __future__ import annotations

import json
import math
import os

import jax
import ml_collections

from jaxseg import checkpoint, families, sharding
from jaxseg.config import upgrade
from jaxseg.errors import NoCheckpointError
from jaxseg.families.semantic import Segmenter  # noqa: F401  (what `load` returns for semantic work dirs)
from jaxseg.models.fold_bn import inference_variables
from jaxseg.state import state_factory, variables


def workdir_config(workdir):
  """The config saved in WORKDIR/config.json."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise NoCheckpointError(f"{path} not found: is {workdir} a jaxseg work dir?")
  with open(path) as f:
    return upgrade(ml_collections.ConfigDict(json.load(f)))


def restore(workdir, config=None, step=None):
  """(config, family, variables, step, mesh) of checkpoint `step` (default: the
  latest) in `workdir`, built from `config` (default: the work dir's config.json);
  the variables for inference, BatchNorm folded into the convolutions."""
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
  family = families.get(config)
  _, abstract_state, _, _ = state_factory(config, family.build_model(train=True), family)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, sharding.state_shardings(abstract_state, mesh))
  state, _ = checkpoint.restore(mngr, step, abstract)
  mngr.close()
  return config, family, inference_variables(variables(state)), step, mesh  # BN folded for inference


def load(workdir, config=None, step=None):
  """The predictor of checkpoint `step` (default: the latest) in `workdir`: for the
  semantic family a `Segmenter` (`.logits(images)`, `.predict(images)`), for the
  detection family a `Detector` (`.instances(images)`)."""
  config, family, variables_, step, mesh = restore(workdir, config, step)
  return family.predictor(family.build_model(train=False), variables_, step, mesh)


def evaluate(workdir, config=None, step=None):
  """--mode eval: restores checkpoint `step` (default: the latest), runs the family's
  evaluators on config.dataset.eval_split, prints the report and appends a row to
  WORKDIR/metrics.jsonl naming the checkpoint and the evaluation settings. Returns
  the scores."""
  from jaxseg.data import datasets, pipeline  # grain: `import jaxseg` does not need it
  from jaxseg.evaluate import Evaluation

  config, family, variables_, step, mesh = restore(workdir, config, step)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  model = family.build_model(train=False)
  evaluation = Evaluation(lambda v, batch: family.predict(model, v, batch), family.evaluators(), repl)
  source = datasets.source(family.builder, config.dataset.eval_split)
  batches = pipeline.eval_batches(config, source, sharding.eval_batch_size(config), jax.process_index(),
                                  jax.process_count(), family)
  scores, _ = evaluation(variables_, batches, lambda b: sharding.global_batch(b, data_sh))
  print(family.report(scores, step), flush=True)
  if jax.process_index() == 0:
    row = {"step": step, **scores, "mode": "eval",
           "checkpoint": os.path.join(os.path.abspath(workdir), "checkpoints", str(step)),
           "settings": {"split": config.dataset.eval_split, "evals": config.evals.to_dict(),
                        "eval": config.eval.to_dict(),
                        "input": {k: v for k, v in config.input.to_dict().items() if k.startswith("eval_")}}}
    try:
      with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    except OSError as e:  # a read-only work dir still evaluates
      print(f"WARNING: cannot append to {workdir}/metrics.jsonl: {e.strerror or e}", flush=True)
  return scores
