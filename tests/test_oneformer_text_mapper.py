"""OneFormer's text mapper (training only) against transformers' OneFormerTextMapper,
random weights, texts tokenised by our CLIP tokeniser; weights through jaxseg.convert's
rows. transformers never applies its text encoder's causal mask; the authors' code does:
both are checked, the causal one against transformers' layers given their own mask.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg.convert.tables import Arch, map_tensors
from jaxseg.convert.transformers import oneformer_text_mapper_rows
from jaxseg.models.heads.oneformer.clip_tokenizer import default_tokenizer
from jaxseg.models.heads.oneformer.text_mapper import TextMapper
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer")
from transformers.models.oneformer import modeling_oneformer as M  # noqa: E402

def causal_forward(layer):
  """transformers' text layer with the causal mask it builds passed to its attention."""
  def forward(x, key_padding_mask=None):
    y = layer.layer_norm1(x)
    x = x + layer.self_attn(y, y, y, need_weights=False, attn_mask=layer.attn_mask)[0]
    return x + layer.mlp(layer.layer_norm2(x))
  return forward


def test_text_mapper_matches_transformers():
  config = transformers.OneFormerConfig(hidden_dim=128, text_encoder_width=128, text_encoder_context_length=16,
                                        text_encoder_num_layers=2, text_encoder_n_ctx=4, text_encoder_proj_layers=2)
  torch.manual_seed(2)
  ref = R.randomize(M.OneFormerTextMapper(config), seed=2)
  texts = [["a photo with a person", "a photo with a traffic light", "an instance photo"],
           ["a photo with a sky", "a panoptic photo", "a panoptic photo"]]
  ids = np.stack([default_tokenizer()(t, 16) for t in texts])  # (2, 3, 16)
  sd = {f"model.text_mapper.{k}": v.numpy() for k, v in ref.state_dict().items()}
  mapped, _ = map_tensors(sd, Arch("oneformer text mapper", oneformer_text_mapper_rows(), lambda sd: {}))
  params = flax.traverse_util.unflatten_dict({k: v for k, (v, _) in mapped.items()}, sep="/")["params"]["text_mapper"]
  kw = dict(dim=128, context=16, width=128, layers=2, proj_layers=2, n_ctx=4)
  expected = jax.eval_shape(lambda: TextMapper(**kw).init(jax.random.key(0), ids))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, expected)

  @jax.jit
  def run(p, ids):
    return [TextMapper(**kw, causal=causal).apply({"params": p}, ids) for causal in (False, True)]
  open_, causal = run(params, jnp.asarray(ids))
  with torch.no_grad():
    theirs = ref(torch.from_numpy(ids).long()).numpy()
    for layer in ref.text_encoder.transformer.layers:
      layer.forward = causal_forward(layer)
    theirs_causal = ref(torch.from_numpy(ids).long()).numpy()
  R.report("text queries, no causal mask (transformers)", open_, theirs)
  R.report("text queries, causal mask (the authors')", causal, theirs_causal)
  assert np.abs(theirs - theirs_causal).max() > 1e-2  # the mask matters
