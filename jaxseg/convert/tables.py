"""Key tables: how the tensors of a PyTorch state dict become jaxseg variables.

A table row is (PyTorch module pattern, jaxseg module pattern, kind). Patterns hold
numbered placeholders: "layer{s}.{b}.conv{k}" matches "layer3.0.conv2", and the
jaxseg side writes the numbers back ("{s}") or one more ("{s+1}", for sources that
count from 0 where we count from 1). The kind says what each tensor of the module
becomes, in which collection, in which layout.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

from jaxseg.convert.io import ConversionError


def oihw_to_hwio(w):
  """PyTorch conv weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out); another
  rank is left as it is, for the shape check to report."""
  return np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w


def to_scalar(x):
  return x.reshape(()) if x.size == 1 else x


# kind -> {PyTorch tensor name: (collection, jaxseg leaf, layout) or None (dropped)}.
# BatchNorm: PyTorch's eps 1e-5 is ours (layers.ConvBN); its running statistics are
# our batch_stats.
KINDS = {
    "conv": {"weight": ("params", "kernel", oihw_to_hwio), "bias": ("params", "bias", None)},
    "bn": {"weight": ("params", "scale", None), "bias": ("params", "bias", None),
           "running_mean": ("batch_stats", "mean", None), "running_var": ("batch_stats", "var", None),
           "num_batches_tracked": None},
    "gamma": {"scale": ("params", "gamma", to_scalar)},  # mmseg's Scale: one learnable number
    "linear": {"weight": ("params", "kernel", np.transpose), "bias": ("params", "bias", None)},  # (out, in)
    "layernorm": {"weight": ("params", "scale", None), "bias": ("params", "bias", None)},  # also GroupNorm
    # Swin's relative position bias: the learned table; the index is recomputed from the window
    "rel_bias": {"relative_position_bias_table": ("params", "relative_position_bias_table", None),
                 "relative_position_index": None},
    "level_embed": {"level_embed": ("params", "level_embed", None)},  # OneFormer pixel decoder's (L, d)
    # torch.nn.MultiheadAttention's fused (3d, d) projection of queries, keys and values
    "mha": {"in_proj_weight": ("params", "in_proj_kernel", np.transpose),
            "in_proj_bias": ("params", "in_proj_bias", None)},
    # nn.Embedding tables kept as a parameter of the module that uses them (OneFormer's decoder)
    "level_embedding": {"weight": ("params", "level_embed", None)},
    "query_embedding": {"weight": ("params", "query_embed", None)},
    "token_embedding": {"weight": ("params", "token_embedding", None)},
    "positional_embedding": {"positional_embedding": ("params", "positional_embedding", None)},
    "prompt_ctx": {"weight": ("params", "prompt_ctx", None)},
    # OneFormer's learned contrastive temperature, log(1 / tau), kept by transformers' loss module
    "logit_scale": {"logit_scale": ("params", "logit_scale", None)},
    # mmseg's Encoding: a = softmax(scale * |x - d|^2), ours softmax(-s * |x - d|^2)
    "encoding": {"codewords": ("params", "codewords", None), "scale": ("params", "smoothing", np.negative)},
}


def prefixed(table, prefix):
  """The table with `prefix` before every PyTorch pattern."""
  return [(prefix + src, dst, kind) for src, dst, kind in table]


@dataclasses.dataclass
class Arch:
  """What one --arch needs: its key table, the jaxseg config keys that build the same
  network (some read from tensor shapes), tensors with no counterpart, and fixes of
  channel order that a table cannot express."""
  name: str
  table: list
  config: Callable[[dict], dict]  # state dict -> {"model.backbone.depth": 50, ...}
  skip: tuple = ()  # regexes of PyTorch keys that are dropped on purpose (classifier fc, ...)
  strip_prefix: str = ""  # dropped from keys that have it; a backbone then skips keys without it
  backbone_only: bool = False
  classifier: bool = False  # an ImageNet classifier: backbone + fc (jaxseg.pssl.explain.Classifier)
  fixup: Callable | None = None  # converted dict -> None, in place
  # a JSON file beside the checkpoint (transformers' config.json) that `config` also reads:
  # config(state dict, its dict or None when absent)
  config_file: str = ""
  # the variables {"params/...": ShapeDtypeStruct} of a model that jaxseg.models.segmentor
  # does not build, from (config, state dict); its checkpoint then holds the variables alone
  variables: Callable | None = None


def _regex(pattern):
  parts = re.split(r"\{(\w+)\}", pattern)  # literal, name, literal, ...
  return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(parts)))


def _fill(pattern, groups):
  return re.sub(r"\{(\w+)(\+1)?\}", lambda m: str(int(groups[m.group(1)]) + bool(m.group(2))), pattern)


def strip_prefix(sd, arch):
  """(state dict with arch.strip_prefix removed, keys dropped): when some keys have
  the prefix, a backbone arch drops the others (the heads of a whole-model checkpoint)."""
  p = arch.strip_prefix
  if not p or not any(k.startswith(p) for k in sd):
    return sd, []
  kept = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
  dropped = [k for k in sd if not k.startswith(p)] if arch.backbone_only else []
  kept.update({k: v for k, v in sd.items() if not k.startswith(p) and not arch.backbone_only})
  return kept, dropped


def map_tensors(sd, arch):
  """{jaxseg key "params/backbone/stem/conv/kernel": (array, PyTorch key)} and the
  PyTorch keys dropped on purpose. A key the table does not know is an error."""
  rows = [(_regex(src), dst, kind) for src, dst, kind in arch.table]
  skip = [re.compile(p) for p in arch.skip]
  out, skipped, unknown = {}, [], []
  for key, value in sd.items():
    name = key
    if any(p.fullmatch(name) for p in skip):
      skipped.append(key)
      continue
    module, _, leaf = name.rpartition(".")
    for regex, dst, kind in rows:
      m = regex.fullmatch(module)
      if m is None:
        continue
      if leaf not in KINDS[kind]:
        unknown.append(key)
      elif KINDS[kind][leaf] is None:
        skipped.append(key)
      else:
        collection, ours, layout = KINDS[kind][leaf]
        target = "/".join(p for p in (collection, _fill(dst, m.groupdict()), ours) if p)  # dst "": top level
        if target in out:
          raise ConversionError(f"{key} and {out[target][1]} both map to {target}")
        out[target] = ((layout(value) if layout else value), key)
      break
    else:
      unknown.append(key)
  if unknown:
    shown = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in unknown[:5])
    raise ConversionError(f"{len(unknown)} tensor(s) have no counterpart in the --arch {arch.name} "
                          f"mapping (wrong --arch or --from?): {shown}"
                          + (" ..." if len(unknown) > 5 else ""))
  return out, skipped


def check_against(out, expected, arch_name, path):
  """Every converted tensor must be a variable of the model with its shape, and every
  variable of the model must be converted."""
  for target, (value, key) in out.items():
    if target not in expected:
      raise ConversionError(f"{key} {tuple(value.shape)} of {path} maps to {target}, which the "
                            f"--arch {arch_name} model does not have (wrong --arch?)")
    if tuple(value.shape) != tuple(expected[target].shape):
      raise ConversionError(f"shape mismatch: {key} of {path} (as {target}) has shape "
                            f"{tuple(value.shape)}, the --arch {arch_name} model expects "
                            f"{tuple(expected[target].shape)}")
  missing = [k for k in expected if k not in out]
  if missing:
    raise ConversionError(f"{path} lacks {len(missing)} tensor(s) of the --arch {arch_name} model: "
                          + ", ".join(f"{k} {tuple(expected[k].shape)}" for k in missing[:5])
                          + (" ..." if len(missing) > 5 else ""))


def shape(sd, key):
  if key not in sd:
    raise ConversionError(f"no tensor {key} (is it a checkpoint of this --from/--arch?)")
  return tuple(sd[key].shape)


def reorder_blocks(x, axis, order):
  """Splits `axis` into len(order) equal blocks and puts them in `order` (a
  concatenation written in another order than ours)."""
  blocks = np.split(x, len(order), axis=axis)
  return np.concatenate([blocks[i] for i in order], axis=axis)


def resnet_rows(prefix="backbone/"):
  """The torchvision block layout, which timm and mmseg share: layer{s}.{b}.conv{k}/bn{k}
  and a downsample = (1x1 conv, BN)."""
  return [
      ("layer{s}.{b}.conv{k}", prefix + "layer{s}_{b}/conv{k}/conv", "conv"),
      ("layer{s}.{b}.bn{k}", prefix + "layer{s}_{b}/conv{k}/bn", "bn"),
      ("layer{s}.{b}.downsample.0", prefix + "layer{s}_{b}/downsample/conv", "conv"),
      ("layer{s}.{b}.downsample.1", prefix + "layer{s}_{b}/downsample/bn", "bn"),
  ]


def backbone_keys(depth, width, stem, output_stride=32):
  """Config keys of a ResNet that computes what the source computes: no multi-grid,
  and a dilated stage's first block at half the rate (torchvision's
  replace_stride_with_dilation, mmseg's contract_dilation)."""
  return {"model.backbone.depth": depth, "model.backbone.width": width, "model.backbone.stem": stem,
          "model.backbone.output_stride": output_stride, "model.backbone.multi_grid": (),
          "model.backbone.contract_dilation": True, "model.backbone.extra_blocks": 0,
          "model.eval_output_stride": output_stride}


def parse_depth(name, match, known):
  """The depth of arch `name` (matched by `match`), or a ConversionError listing `known`."""
  from jaxseg.models.backbones.resnet import DEPTHS
  if match is None or int(match.group("depth")) not in DEPTHS:
    raise ConversionError(f"unknown --arch {name} (known: {known}; depths {sorted(DEPTHS)})")
  return int(match.group("depth"))


def classifier_arch(name, table, fc, backbone_config, strip_prefix=""):
  """The Arch of a whole ImageNet classifier: the backbone `table` plus the dense
  layer `fc` (PyTorch module name) as jaxseg's "fc"; dataset.num_classes from its shape."""
  def config(sd):
    return {**backbone_config(sd), "dataset.num_classes": shape(sd, f"{fc}.weight")[0]}
  return Arch(name, [*table, (fc, "fc", "linear")], config, strip_prefix=strip_prefix, classifier=True)
