"""BatchNorm folded into the preceding convolution, for inference.

With running statistics a BatchNorm after a bias-free convolution is an affine map
per output channel o, so it folds into the convolution (Jacob et al. 2018, Sec. 3.2):

  scale_o * (conv(x, W)_o - mean_o) / sqrt(var_o + eps) + bias_o
    = conv(x, W * m)_o + (bias_o - mean_o * m_o),     m_o = scale_o / sqrt(var_o + eps)

`fold_batch_norm` rewrites every layers.ConvBN unit of a variables tree so: its conv
kernel scaled by m, a "bias" next to it, its BatchNorm's parameters and statistics
gone; ConvBN adds that bias instead of normalising when it finds it (inference only;
training needs the BatchNorm). A unit is recognised by its variables: exactly
{"conv": {"kernel"}, "bn": {"scale", "bias"}} params and {"bn": {"mean", "var"}}
statistics, as ConvBN creates them; other modules that hold a conv and a BatchNorm
keep theirs (they would fail loudly, not silently, on a folded tree).

The inference paths (`jaxseg.load`, --mode eval and predict) fold the variables they
restore; JAXSEG_FOLD_BN=0 keeps the BatchNorms (benchmarks, tests).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp

EPSILON = 1e-5  # layers.ConvBN's


def _is_conv_bn(params, stats):
  return (isinstance(params, Mapping) and set(params) == {"conv", "bn"} and set(params["conv"]) == {"kernel"}
          and set(params["bn"]) == {"scale", "bias"} and isinstance(stats, Mapping) and set(stats) == {"bn"}
          and set(stats["bn"]) == {"mean", "var"})


def _fold_unit(params, stats):
  kernel, bn, s = params["conv"]["kernel"], params["bn"], stats["bn"]
  m = bn["scale"].astype(jnp.float32) * jax.lax.rsqrt(s["var"].astype(jnp.float32) + EPSILON)
  return {"conv": {"kernel": (kernel.astype(jnp.float32) * m).astype(kernel.dtype)},
          "bias": (bn["bias"] - s["mean"] * m).astype(bn["bias"].dtype)}


def _fold(params, stats):
  """(params, batch_stats) of one subtree, every ConvBN unit in it folded."""
  if _is_conv_bn(params, stats):
    return _fold_unit(params, stats), None
  if not isinstance(params, Mapping):
    return params, stats
  new_params, new_stats = {}, {}
  for key, sub in params.items():
    sub_stats = stats.get(key) if isinstance(stats, Mapping) else None
    new_params[key], folded_stats = _fold(sub, sub_stats)
    if folded_stats is not None:
      new_stats[key] = folded_stats
  for key, sub in (stats or {}).items():  # statistics of modules without parameters
    if key not in params:
      new_stats[key] = sub
  return new_params, new_stats or None


def fold_batch_norm(variables):
  """`variables` ({"params", "batch_stats", ...}) with every ConvBN's BatchNorm folded
  into its convolution (see the module docstring); other collections unchanged."""
  params, stats = _fold(dict(variables["params"]), dict(variables.get("batch_stats", {})))
  out = {**variables, "params": params}
  out["batch_stats"] = stats or {}
  return out


def inference_variables(variables):
  """What the inference paths run: `variables` folded, unless JAXSEG_FOLD_BN=0."""
  if os.environ.get("JAXSEG_FOLD_BN", "1") == "0":
    return variables
  return jax.jit(fold_batch_norm)(variables)
