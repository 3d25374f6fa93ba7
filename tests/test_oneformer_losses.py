"""OneFormer's losses against transformers' own OneFormerLoss + OneFormerHungarianMatcher:
random predictions of non-zero scale, two aux layers, padded ground truth (junk in the
padded slot), ground-truth masks at another resolution than the predictions. Both sides
get the same random points: torch.rand, which the reference calls for its matching points
and its importance-sampling candidates, is replaced by a feed of jaxseg's own draws. The
terms and the gradients of the weighted total (logit scale included) are compared: equal
gradients of every layer's class and mask logits are equal matchings. A jitted gradient
step on a batch without any valid ground truth is finite.
"""
import jax
import numpy as np
import pytest
import torch

from jaxseg.models.heads.oneformer import losses as L
from tests import torch_reference as R

transformers = pytest.importorskip("transformers", reason="the reference is transformers' OneFormerLoss")
from transformers.models.oneformer import modeling_oneformer as M  # noqa: E402

B, N, K, SLOTS, D, P, AUX = 2, 8, 4, 4, 6, 64, 2
COUNTS = [4, 3]  # the second image's last slot is padding
NAMES = {"class": "loss_cross_entropy", "mask": "loss_mask", "dice": "loss_dice", "contrastive": "loss_contrastive"}
KW = dict(num_classes=K, num_points=P, oversample_ratio=3.0, importance_sample_ratio=0.75, no_object_weight=0.1)


def make_inputs(seed):
  rng = np.random.RandomState(seed)
  layers = [{"class_logits": (rng.randn(B, N, K + 1) * 2).astype(np.float32),
             "mask_logits": (rng.randn(B, 12, 16, N) * 3).astype(np.float32)} for _ in range(1 + AUX)]
  queries = rng.randn(B, N, D).astype(np.float32)
  text = (0.2 * queries + rng.randn(B, N, D)).astype(np.float32)  # correlated: contrastive logits of some spread
  masks = (rng.rand(B, SLOTS, 24, 32) < rng.uniform(0.2, 0.6, (B, SLOTS, 1, 1))).astype(np.uint8)
  classes = rng.randint(0, K, (B, SLOTS)).astype(np.int32)
  valid = np.arange(SLOTS)[None] < np.asarray(COUNTS)[:, None]
  classes[~valid], masks[~valid] = 3, 1  # junk in the padded slot: it must not count
  return layers, queries, text, {"instance_classes": classes, "instance_masks": masks, "instance_valid": valid}


def relative(name, ours, theirs):
  """R.report relative to max |theirs| also where that is below 1 (the gradients)."""
  scale = float(np.abs(theirs).max())
  assert scale > 0, name
  R.report(name, np.asarray(ours) / scale, np.asarray(theirs) / scale, tol=1e-5)


def jax_outputs(layers, queries):
  return {**layers[0], "aux": layers[1:], "queries": queries}


def loss(layers, queries, text, logit_scale, targets, key):
  terms = L.oneformer_losses(jax_outputs(layers, queries), targets, key, text, logit_scale, **KW)
  return L.total(terms), terms


# ((total, terms), d total / d (layers, queries, text, logit_scale)): one compilation for both tests
step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))
LOGIT_SCALE = L.initial_logit_scale()


def test_losses_and_gradients_equal_transformers(monkeypatch):
  layers, queries, text, targets = make_inputs(0)
  key = jax.random.key(3)
  (ours_total, ours), grads = step(layers, queries, text, LOGIT_SCALE, targets, key)

  # jaxseg's random points of every layer, by the contract of oneformer_losses' docstring
  draws = [jax.tree.map(np.asarray, L.draw_points(k, B, SLOTS, P, 3.0, 0.75))
           for k in jax.random.split(key, 1 + AUX)]
  matched = []  # the reference matcher's indices, one per layer

  def feed():
    for draw in draws:
      for i in range(B):  # the matcher: one rand(1, P, 2) per image
        yield draw["match"][i:i + 1]
      images, slots = zip(*[(i, int(j)) for i, (_, tgt) in enumerate(matched[-1]) for j in tgt])
      yield draw["coarse"][list(images), list(slots)]  # loss_masks: candidates of the matched masks, in their order
      yield draw["extra"][list(images), list(slots)]
  draws_left = feed()

  def rand(*shape, **kwargs):
    values = next(draws_left)
    assert values.shape == tuple(shape), (values.shape, shape)
    return torch.from_numpy(np.array(values))

  matcher = M.OneFormerHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=P)
  forward = matcher.forward
  matcher.forward = lambda *a, **k: matched.append(forward(*a, **k)) or matched[-1]
  ref = M.OneFormerLoss(num_classes=K, matcher=matcher, weight_dict={}, eos_coef=0.1, num_points=P,
                        oversample_ratio=3.0, importance_sample_ratio=0.75, contrastive_temperature=0.07)
  t = lambda a: torch.tensor(a, requires_grad=True)
  t_layers = [{"class_queries_logits": t(x["class_logits"]),
               "masks_queries_logits": t(x["mask_logits"].transpose(0, 3, 1, 2))} for x in layers]
  t_queries, t_text = t(queries), t(text)
  monkeypatch.setattr(torch, "rand", rand)
  theirs = ref(t_layers[0]["masks_queries_logits"], t_layers[0]["class_queries_logits"], t_queries,
               [torch.from_numpy(targets["instance_masks"][i, :c].astype(np.float32)) for i, c in enumerate(COUNTS)],
               [torch.from_numpy(targets["instance_classes"][i, :c]).long() for i, c in enumerate(COUNTS)],
               t_text, auxiliary_predictions=t_layers[1:])
  monkeypatch.undo()
  assert next(draws_left, None) is None  # every draw was used, no more were asked for

  assert sorted(ours) == sorted(k.replace("loss_", "").replace("cross_entropy", "class") for k in theirs)
  for name, value in ours.items():
    ref_name = NAMES[name.split("_")[0]] + name[len(name.split("_")[0]):]
    R.report(f"loss term {name}", value, theirs[ref_name].detach().numpy().reshape(()), tol=1e-5)
  # gradients of the paper's weighted total (transformers' weight rule: a key contained in the term's name);
  # equal rows of d / d class logits and d / d mask logits of every layer are equal matchings
  weights = {NAMES[k]: v for k, v in L.WEIGHTS.items()}
  their_total = sum(v * next(w for k, w in weights.items() if k in name) for name, v in theirs.items())
  their_total.backward()
  R.report("weighted total", ours_total, their_total.detach().numpy().reshape(()), tol=1e-5)
  for i, layer in enumerate(t_layers):
    relative(f"d total / d class logits, layer {i}", grads[0][i]["class_logits"],
             layer["class_queries_logits"].grad.numpy())
    relative(f"d total / d mask logits, layer {i}", grads[0][i]["mask_logits"],
             layer["masks_queries_logits"].grad.numpy().transpose(0, 2, 3, 1))
  relative("d total / d queries", grads[1], t_queries.grad.numpy())
  relative("d total / d text queries", grads[2], t_text.grad.numpy())
  relative("d total / d logit scale", grads[3], ref.logit_scale.grad.numpy())
  R.report("initial logit scale", LOGIT_SCALE, ref.logit_scale.detach().numpy(), tol=1e-6)
  assert abs(float(grads[3])) > 1e-4 and float(ours["contrastive"]) > 0.05


def test_no_valid_ground_truth_gives_finite_losses_and_gradients():
  layers, queries, text, targets = make_inputs(1)
  targets["instance_valid"][:] = False
  (value, terms), grads = step(layers, queries, text, LOGIT_SCALE, targets, jax.random.key(0))
  assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  for i, layer in enumerate(layers):  # every query is no-object: the plain mean of -log p(K)
    logits = layer["class_logits"].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    suffix = "" if i == 0 else f"_{i - 1}"
    np.testing.assert_allclose(float(terms["class" + suffix]), -logp[..., K].mean(), rtol=1e-5)
    assert float(terms["mask" + suffix]) == 0 and float(terms["dice" + suffix]) == 0
  assert np.abs(np.asarray(grads[0][0]["class_logits"])).max() > 0  # the class loss still trains


def test_bad_inputs_name_the_entry():
  layers, queries, text, targets = make_inputs(2)
  outputs = jax_outputs(layers, queries)
  with pytest.raises(ValueError, match=r"text_queries \(2, 5, 6\) must have the shape of outputs\['queries'\]"):
    L.oneformer_losses(outputs, targets, jax.random.key(0), text[:, :5], 0.0, **KW)
  bad = jax_outputs(layers[:2] + [{**layers[2], "class_logits": layers[2]["class_logits"][..., :-1]}], queries)
  with pytest.raises(ValueError, match=r"outputs\['aux'\]\[1\]\['class_logits'\]: expected .* K = num_classes = 4"):
    L.oneformer_losses(bad, targets, jax.random.key(0), text, 0.0, **KW)
  with pytest.raises(ValueError, match=r"the batch lacks \['instance_valid'\]"):
    L.oneformer_losses(outputs, {k: v for k, v in targets.items() if k != "instance_valid"}, jax.random.key(0),
                       text, 0.0, **KW)
