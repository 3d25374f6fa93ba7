"""Frozen BatchNorm for fine-tuning stages (DeepLabv3's second VOC stage: "freeze batch
normalization parameters", OS8, lr 0.001 on trainval).

Inside `frozen_batch_norm(patterns)`, every `nn.BatchNorm` whose module path
("backbone/layer1_0/conv1/bn") matches one of the patterns (`re.search`) normalises
with its running statistics during training too and leaves them untouched, bit for
bit; with `affine=True` its scale and bias get no gradient either. The models need no
option of their own: an interceptor replaces those modules' calls while the training
step applies the model.
"""
from __future__ import annotations

import contextlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp


def _running_average_norm(module, x, affine):
  """What `module` computes with use_running_average=True: (x - mean) / sqrt(var + eps)
  * scale + bias over its feature axes, as flax orders the operations."""
  axes = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
  axes = tuple(a % x.ndim for a in axes)
  shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
  stats = module.variables["batch_stats"]
  params = module.variables.get("params", {})
  freeze = jax.lax.stop_gradient if affine else (lambda p: p)
  dtype = module.dtype or jnp.result_type(x, *jax.tree.leaves(params))
  mean, var = stats["mean"].reshape(shape), stats["var"].reshape(shape)
  y = x - mean
  mul = jax.lax.rsqrt(var + module.epsilon)
  if module.use_scale:
    mul = mul * freeze(params["scale"]).reshape(shape)
  y = y * mul
  if module.use_bias:
    y = y + freeze(params["bias"]).reshape(shape)
  return jnp.asarray(y, dtype)


@contextlib.contextmanager
def frozen_batch_norm(patterns, affine=True):
  """Freezes the BatchNorm modules whose paths match `patterns` (see the module
  docstring) for the model applications inside the `with` block; no patterns: a
  no-op."""
  patterns = tuple(patterns)
  if not patterns:
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name == "__call__" and isinstance(module, nn.BatchNorm)
        and any(re.search(p, "/".join(module.path)) for p in patterns)):
      return _running_average_norm(module, args[0], affine)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield
