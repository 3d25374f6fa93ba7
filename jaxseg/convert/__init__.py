"""Pretrained weights from PyTorch checkpoints (torchvision, timm, mmsegmentation,
transformers) as jaxseg checkpoints.

  python -m jaxseg.convert --from torchvision --arch resnet101 --input resnet101.pth --output DIR

A whole segmentation model becomes a work dir (config.json + checkpoints/0) that
`--mode eval`, `--mode predict` and `jaxseg.load` read; a backbone becomes a
checkpoint that config `model.init_from` (with `model.init_from_prefix="backbone"`)
loads into any segmentor; with `--classifier`, an ImageNet ResNet keeps its fc too and
becomes an ensemble member of PSSL's pseudo-label generation (jaxseg.pssl.generate).
Nothing is written unless every tensor found its place
with its shape.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.config import load_config_file  # noqa: F401  (the --config of python -m jaxseg.convert)
from jaxseg.convert import mmseg, timm, torchvision, transformers
from jaxseg.convert.io import ConversionError, read_beside, read_state_dict
from jaxseg.convert.tables import check_against, map_tensors, strip_prefix

# --from -> the module whose arch(name) gives the mapping
SOURCES = {"torchvision": torchvision, "timm": timm, "mmseg": mmseg, "transformers": transformers}
CLASSIFIER_SOURCES = ("torchvision", "timm", "transformers")  # --classifier: ImageNet ResNets with their fc


def set_keys(config, keys):
  for dotted, value in keys.items():
    *groups, leaf = dotted.split(".")
    node = config
    for g in groups:
      node = node[g]
    node[leaf] = value


def expected_variables(config, backbone_only, classifier=False):
  """{"params/backbone/stem/conv/kernel": ShapeDtypeStruct, ...} of the model of
  `config`: the whole segmentor, its backbone alone, or the ImageNet classifier
  (jaxseg.pssl.explain.Classifier: backbone + fc)."""
  from jaxseg.models.segmentor import build_model
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  if classifier:
    from jaxseg.pssl.explain import classifier_from_config
    tree = jax.eval_shape(lambda: classifier_from_config(config).init(jax.random.key(0), x))
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  model = build_model(config)
  if backbone_only:
    tree = jax.eval_shape(lambda: model.backbone.init(jax.random.key(0), x))
    tree = {c: {"backbone": v} for c, v in tree.items()}
  else:
    tree = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                             x, train=True))
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def convert_state_dict(sd, source, arch_name, config=None, path="the checkpoint", classifier=False):
  """(config, {"params": tree, "batch_stats": tree}, report) for state dict `sd`;
  `classifier`: the whole ImageNet classifier (fc included), not its backbone."""
  from jaxseg.config import base_config
  if source not in SOURCES:
    raise ConversionError(f"--from {source}: unknown source (known: {', '.join(SOURCES)})")
  if classifier and source not in CLASSIFIER_SOURCES:
    raise ConversionError(f"--classifier: --from {source} has no ImageNet classifiers (known: "
                          f"{', '.join(CLASSIFIER_SOURCES)})")
  arch = SOURCES[source].arch(arch_name, classifier=True) if classifier else SOURCES[source].arch(arch_name)
  sd, dropped = strip_prefix(sd, arch)
  try:
    keys = arch.config(sd, read_beside(path, arch.config_file)) if arch.config_file else arch.config(sd)
  except ConversionError as e:
    raise ConversionError(f"{path}: {e}") from None
  if config is not None and "dataset.num_classes" in keys and keys["dataset.num_classes"] != config.dataset.num_classes:
    raise ConversionError(f"{path} predicts {keys['dataset.num_classes']} classes, the --config dataset "
                          f"'{config.dataset.name}' has {config.dataset.num_classes}")
  config = base_config() if config is None else config
  set_keys(config, keys)
  out, skipped = map_tensors(sd, arch)
  if arch.fixup:
    arch.fixup(out)
  expected = arch.variables(config, sd) if arch.variables else expected_variables(config, arch.backbone_only,
                                                                                  arch.classifier)
  check_against(out, expected, arch_name, path)
  variables = flax.traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, (v, _) in out.items()},
                                                sep="/")
  report = {"from": source, "arch": arch_name, "input": path, "backbone_only": arch.backbone_only,
            "classifier": arch.classifier, "variables_only": arch.variables is not None,
            "loaded": {src: target for target, (_, src) in sorted(out.items())},
            "skipped": sorted(dropped + skipped)}
  return config, variables, report


def write_checkpoint(output, config, variables, report):
  """Writes OUTPUT/{config.json, checkpoints/0, converted.json} through a temporary
  directory renamed at the end, so a failure leaves no OUTPUT behind."""
  from jaxseg import checkpoint
  from jaxseg.models.segmentor import build_model
  from jaxseg.state import TrainState, state_factory

  output = os.path.abspath(output)
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise ConversionError(f"--output {output} exists and is not empty; choose a new directory")
  os.makedirs(os.path.dirname(output), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=os.path.dirname(output))
  try:
    params = jax.tree.map(jnp.asarray, variables["params"])
    batch_stats = jax.tree.map(jnp.asarray, variables.get("batch_stats", {}))
    step = jnp.zeros((), jnp.int32)
    if report["backbone_only"] or report.get("classifier") or report.get("variables_only"):
      state = {"step": step, "params": params, "batch_stats": batch_stats}
    else:  # a TrainState as training saves it, so eval/predict/load restore it unchanged
      _, _, tx, _ = state_factory(config, build_model(config))
      state = TrainState(step=step, params=params, batch_stats=batch_stats, opt_state=jax.jit(tx.init)(params))
    with open(os.path.join(tmp, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(tmp, "converted.json"), "w") as f:
      json.dump(report, f, indent=1)
    mngr = checkpoint.manager(tmp, keep=1)
    checkpoint.save(mngr, 0, state, {})
    mngr.wait_until_finished()
    mngr.close()
    if os.path.isdir(output):
      os.rmdir(output)  # empty
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output


def convert(source, arch, input_path, output, config=None, classifier=False):
  """Converts checkpoint `input_path` of `source`'s `arch` into OUTPUT; returns the
  report {loaded: {PyTorch key: jaxseg key}, skipped: [PyTorch keys]}."""
  sd = read_state_dict(input_path)
  config, variables, report = convert_state_dict(sd, source, arch, config, input_path, classifier)
  write_checkpoint(output, config, variables, report)
  return report
