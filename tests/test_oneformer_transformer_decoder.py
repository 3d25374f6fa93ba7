"""OneFormer's task conditioning and transformer decoder against transformers' own
modules (random weights, randomised LayerNorm affines and embeddings): the CLIP BPE
tokeniser against transformers' CLIPTokenizer built from the same merge file, the task
MLP against OneFormerTaskModel, and the query transformer + masked-attention decoder
(every layer's class and mask predictions) against OneFormerTransformerModule.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg.convert.tables import Arch, map_tensors
from jaxseg.convert.transformers import fuse_qkv, oneformer_transformer_rows
from jaxseg.models.heads.oneformer import clip_tokenizer as C
from jaxseg.models.heads.oneformer.task_encoder import TaskEncoder
from jaxseg.models.heads.oneformer.transformer_decoder import TransformerDecoder, attention_mask
from jaxseg.models.layers import resize
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormer")
from transformers.models.oneformer import modeling_oneformer as M  # noqa: E402

def test_clip_tokenizer_matches_transformers():
  merges = C.read_merges(C.default_vocab_path())
  vocab = C.build_vocab(merges)
  assert len(vocab) == 49408 and vocab[C.START] == 49406 and vocab[C.END] == 49407
  assert transformers.OneFormerConfig().task_seq_len == 77
  ref = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
  texts = ["the task is semantic", "the task is instance", "the task is panoptic",
           "a photo with a traffic light", "an instance photo", "A/An PANOPTIC   photo",
           "Hello,  World! it's 2024, café naïve 3.5x", "x " * 100]  # the last one is truncated
  ours = C.CLIPTokenizer()(texts)
  t = ref(texts, padding="max_length", max_length=77, truncation=True)
  theirs = np.asarray(t["input_ids"]) * np.asarray(t["attention_mask"])  # OneFormerProcessor's zero padding
  np.testing.assert_array_equal(ours, theirs)
  assert ours[-1, -1] == 49407 and (ours[:3, 7:] == 0).all()
  np.testing.assert_array_equal(C.task_ids(["semantic", "instance", "panoptic"]), ours[:3])
  # CLIP's (and the authors') cleaning unescapes HTML, which transformers' tokeniser does not
  amp = C.CLIPTokenizer()(["fish &amp; chips", "fish & chips"])
  np.testing.assert_array_equal(amp[0], amp[1])
  assert ref(["fish &amp; chips"])["input_ids"][0] != list(amp[0][:len(ref(["fish &amp; chips"])["input_ids"][0])])
  with pytest.raises(ValueError, match="unknown task 'stuff'"):
    C.task_ids(["stuff"])


def test_task_encoder_matches_transformers():
  config = transformers.OneFormerConfig(hidden_dim=32)
  torch.manual_seed(0)
  ref = R.randomize(M.OneFormerTaskModel(config), seed=0)
  ids = C.task_ids(["semantic", "instance", "panoptic"])
  with torch.no_grad():
    theirs = ref(torch.from_numpy(ids).float()).numpy()
  sd = {f"model.task_encoder.{k}": v.numpy() for k, v in ref.state_dict().items()}
  params = converted(sd, oneformer_transformer_rows())["task_encoder"]
  ours = jax.jit(lambda p, x: TaskEncoder(32).apply({"params": p}, x))(params, jnp.asarray(ids))
  R.report("task token", ours, theirs)


def converted(sd, rows):
  """Our params from a transformers state dict through jaxseg.convert's OneFormer rows."""
  mapped, _ = map_tensors(sd, Arch("oneformer transformer", rows, lambda sd: {}))
  fuse_qkv(mapped)
  return flax.traverse_util.unflatten_dict({k: v for k, (v, _) in mapped.items()}, sep="/")["params"]


SHAPES = ((3, 4), (5, 7), (9, 13))  # 1/32, 1/16, 1/8 (odd sizes); the 1/4 map is 18x26


def test_transformer_decoder_matches_transformers():
  """Query transformer + 3 masked-attention layers (hidden 32, 2 heads, 6 queries, K 5)
  on random multi-scale maps and a random task token: every layer's class and mask
  predictions, the initial queries and the last layer's queries."""
  config = transformers.OneFormerConfig(hidden_dim=32, num_attention_heads=2, decoder_layers=4, num_queries=6,
                                        num_labels=5, conv_dim=16, mask_dim=16, dim_feedforward=64, dropout=0.0)
  torch.manual_seed(1)
  ref = R.randomize(M.OneFormerTransformerModule(in_features=16, config=config), seed=1)
  rng = np.random.RandomState(0)
  b = 2
  maps = [rng.randn(b, h, w, 16).astype(np.float32) for h, w in SHAPES]
  mask_features = rng.randn(b, 18, 26, 16).astype(np.float32)
  task_token = rng.randn(b, 32).astype(np.float32)
  nchw = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    out = ref(multi_scale_features=[nchw(m) for m in maps], mask_features=nchw(mask_features),
              task_token=torch.from_numpy(task_token))
  theirs_class = [a["class_queries_logits"] for a in out.auxiliary_predictions] + [out.prediction_class]
  theirs_mask = [a["masks_queries_logits"] for a in out.auxiliary_predictions] + [out.prediction_masks]

  sd = {f"model.transformer_module.{k}": v.numpy() for k, v in ref.state_dict().items()}
  params = converted(sd, oneformer_transformer_rows())["transformer_decoder"]
  for l, proj in enumerate(ref.input_projections):  # a plain list in transformers: not in its state dict
    params[f"input_proj{l}"] = {"kernel": proj.weight.detach().numpy().transpose(2, 3, 1, 0),
                                "bias": proj.bias.detach().numpy()}
  model = TransformerDecoder(num_classes=5, dim=32, mask_dim=16, heads=2, layers=3, queries=6, ffn_dim=64, dropout=0.0)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), maps, mask_features, task_token))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape, expected)
  ours = jax.jit(lambda p, ms, mf, t: model.apply({"params": p}, ms, mf, t))(
      params, maps, mask_features, task_token)
  assert len(ours["class_logits"]) == len(theirs_class) == 4
  for i, (c, m, tc, tm) in enumerate(zip(ours["class_logits"], ours["mask_logits"], theirs_class, theirs_mask)):
    if i < 3:  # the mask the next layer attends with: not trivial, and no value at the threshold
      size = SHAPES[(i + 1) % 3]
      resized = np.asarray(resize(jnp.asarray(tm.permute(0, 2, 3, 1).numpy()), size))
      blocked = np.asarray(attention_mask(jnp.asarray(tm.permute(0, 2, 3, 1).numpy()), size))
      print(f"\n[mask for layer {i}] {blocked.mean():.0%} of query-pixel pairs masked; smallest |logit| "
            f"at {size}: {np.abs(resized).min():.2e} (the 0.5 threshold is logit 0)")
      assert 0.1 < blocked.mean() < 0.9 and np.abs(resized).min() > 1e-5
    R.report(f"class logits after {i} layers", c, tc.numpy())
    R.report(f"mask logits after {i} layers", m, tm.permute(0, 2, 3, 1).numpy())
  R.report("initial queries (query transformer + task token)", ours["queries"], out.contrastive_logits.numpy())
  R.report("object queries after the last layer", ours["object_queries"], out.object_queries.numpy())


def test_attention_mask_unmasks_fully_masked_queries():
  logits = np.full((1, 4, 4, 3), -5.0, np.float32)  # query 0: nowhere; query 1: everywhere
  logits[..., 1] = 5.0
  logits[0, :2, :2, 2] = 5.0  # query 2: the top-left 2x2 corner (at 1/2: its top-left pixel)
  blocked = np.asarray(attention_mask(jnp.asarray(logits), (2, 2)))
  assert not blocked[0, 0].any() and not blocked[0, 1].any()  # all masked -> attends everywhere
  np.testing.assert_array_equal(blocked[0, 2], [False, True, True, True])
