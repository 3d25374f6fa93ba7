"""Scoring at the stored label size: eval images resized by the keep-ratio protocol,
the prediction resized back (torch's bilinear) and scored against the label as stored,
checked against numpy / torch references on odd and elongated sizes."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg import sharding
from jaxseg.data import pipeline, transforms
from jaxseg.errors import InputDataError
from jaxseg.evaluate import SegEvaluator, resized_back, slide_logits_per_image
from jaxseg.families.semantic import Family
from tests.conftest import load_config

K = 5
W = np.random.default_rng(3).normal(size=(3, K)).astype(np.float32)  # the pointwise model's weights
SIZES = [(37, 151), (45, 33), (29, 40), (16, 16)]  # odd, elongated (37x151: 4:1), and already at size


class Pointwise:
  """A "model" whose logits are a per-pixel linear map of the normalised image."""

  def apply(self, variables, x, train, batch):
    return {"seg": x @ jnp.asarray(W)}


def records():
  rng = np.random.default_rng(0)
  out = []
  for h, w in SIZES:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, K, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.1] = 255
    out.append({"image": image, "label": label[..., None]})
  return out


def protocol_config(mode="whole"):
  config = load_config("quickstart", "tiny")
  config.dataset.num_classes = K
  config.input.update(dict(eval_short_side=16, eval_long_side=64, eval_size=(64, 64), eval_label_size=(48, 152)))
  config.eval.update(dict(mode=mode, crop_size=(12, 12), stride=(7, 7)))
  return config


def test_keep_ratio_size_is_mmcv_rescale():
  # mmcv: scale = min(long / max(h, w), short / min(h, w)); size = int(x * scale + 0.5)
  assert transforms.keep_ratio_size((37, 151), 16, 64) == (16, 64)  # the long side bounds it: not 16x65
  assert transforms.keep_ratio_size((512, 683), 512, 2048) == (512, 683)
  assert transforms.keep_ratio_size((300, 500), 512, 2048) == (512, 853)  # up: 853.33
  assert transforms.keep_ratio_size((100, 1000), 512, 2048) == (205, 2048)  # 4096 capped at 2048
  assert transforms.keep_ratio_size((384, 512), 0, 512) == (384, 512)
  assert transforms.keep_ratio_size((3, 5), 1, 0) == (1, 2)  # 1.67 -> 2: rounded half up


def test_eval_batch_keeps_the_stored_label_and_the_sizes():
  family = Family(protocol_config())
  recs = records()
  batch = next(pipeline.eval_batches(family.config, recs, 6, family=family))  # 4 records + 2 blanks
  assert batch["image"].shape == (6, 64, 64, 3) and batch["label"].shape == (6, 48, 152)
  for i, r in enumerate(recs):
    h, w = r["label"].shape[:2]
    np.testing.assert_array_equal(batch["label"][i, :h, :w], r["label"][..., 0])  # never resized
    assert (batch["label"][i, h:] == 255).all() and (batch["label"][i, :, w:] == 255).all()
    assert tuple(batch["label_size"][i]) == (h, w)
    assert tuple(batch["image_size"][i]) == transforms.keep_ratio_size((h, w), 16, 64)
  assert tuple(batch["image_size"][0]) == (16, 64)  # the 4:1 image is not shrunk to fit a square
  assert (batch["label"][4:] == 255).all() and (batch["image_size"][4:] == 0).all()
  small = protocol_config()
  small.input.eval_size = (64, 48)  # cannot hold the protocol's 16x64
  with pytest.raises(InputDataError, match=r"record 0 .*16x64 after the resize .*input.eval_size"):
    next(pipeline.eval_batches(small, recs, 2))
  small = protocol_config()
  small.input.eval_label_size = (48, 100)
  with pytest.raises(InputDataError, match=r"record 0 .*label is 37x151.*input.eval_label_size"):
    next(pipeline.eval_batches(small, recs, 2))


@pytest.mark.parametrize("align_corners", [False, True])
def test_resized_back_equals_torch_interpolate(align_corners):
  rng = np.random.default_rng(1)
  canvas = np.zeros((3, 20, 24, K), np.float32) + 100  # padding that must not leak in
  valid, labels = [(7, 19), (20, 5), (13, 24)], [(37, 151), (9, 3), (13, 24)]  # up, down, same
  for i, (h, w) in enumerate(valid):
    canvas[i, :h, :w] = rng.normal(size=(h, w, K))
  out = resized_back(jnp.asarray(canvas), jnp.asarray(valid, jnp.int32), jnp.asarray(labels, jnp.int32),
                     (40, 152), align_corners, reduce=lambda x: x, chunk_bytes=4 * 3 * 152 * K * 7)  # 7-row chunks
  out = np.asarray(out)
  for i, ((h, w), (lh, lw)) in enumerate(zip(valid, labels)):
    x = torch.from_numpy(canvas[i, :h, :w]).permute(2, 0, 1)[None]
    want = F.interpolate(x, size=(lh, lw), mode="bilinear", align_corners=align_corners)[0].permute(1, 2, 0)
    np.testing.assert_allclose(out[i, :lh, :lw], want.numpy(), rtol=1e-5, atol=1e-5)


def reference_confusion(recs, config, slide=None):
  """numpy / cv2 / torch: resize the image, the pointwise logits, (mmseg's slide
  windows,) F.interpolate back to the label, argmax, bincount against the label."""
  cm = np.zeros((K, K), np.int64)
  mean, std = np.asarray(config.dataset.mean, np.float32), np.asarray(config.dataset.std, np.float32)
  for r in recs:
    label = r["label"][..., 0]
    h, w = transforms.keep_ratio_size(label.shape, 16, 64)
    image = cv2.resize(r["image"], (w, h), interpolation=cv2.INTER_LINEAR)
    logits = ((image.astype(np.float32) - mean) / std) @ W
    if slide is not None:
      logits = slide(logits)
    x = torch.from_numpy(logits).permute(2, 0, 1)[None]
    pred = F.interpolate(x, size=label.shape, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    valid = label != 255
    cm += np.bincount(label[valid].astype(int) * K + pred[valid], minlength=K * K).reshape(K, K)
  return cm


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_prediction_resized_back_scores_as_numpy_at_the_stored_size(mode):
  config = protocol_config(mode)
  family = Family(config)
  recs = records()
  mesh = sharding.make_mesh()
  data_sh = sharding.data_sharding(mesh)
  evaluator = SegEvaluator(lambda v, batch: family.predict(Pointwise(), v, batch)["pred"], K, 255, data_sh,
                           sharding.replicated(mesh))
  batches = pipeline.eval_batches(config, recs, 3, family=family)  # the last batch holds 2 blanks
  scores, cm = evaluator({}, batches, lambda b: sharding.global_batch(b, data_sh))
  want = reference_confusion(recs, config)  # a pointwise model: slide = whole in the valid region
  assert cm.sum() == sum(int((r["label"] != 255).sum()) for r in recs)
  np.testing.assert_array_equal(cm, want)


def test_slide_windows_per_image_are_mmsegs():
  """A model that adds its window's mean: the result depends on where the windows are."""
  rng = np.random.default_rng(2)
  crop, stride = (6, 8), (4, 5)
  sizes = [(11, 17), (6, 8), (4, 20)]  # several windows; exactly one; smaller than the crop in H
  images = np.zeros((3, 16, 24, 2), np.float32)
  for i, (h, w) in enumerate(sizes):
    images[i, :h, :w] = rng.normal(size=(h, w, 2))
  forward = lambda x: x + x.mean(axis=(1, 2), keepdims=True)
  slide = jax.jit(lambda x, s, mirrored: slide_logits_per_image(lambda v: forward(v["image"]), {"image": x}, s, crop,
                                                                 stride, 2, mirrored), static_argnums=2)
  out = np.asarray(slide(jnp.asarray(images), jnp.asarray(sizes, jnp.int32), False))
  # A flip view (the canvas flipped, the images at its right): the mirrored windows.
  flipped = np.asarray(slide(jnp.asarray(images[:, :, ::-1]), jnp.asarray(sizes, jnp.int32), True))
  np.testing.assert_allclose(flipped[:, :, ::-1], out, rtol=1e-5, atol=1e-6)

  def mmseg_slide(image):  # mmseg's slide_inference, with the window kept at crop size
    h, w = image.shape[:2]
    total, count = np.zeros((h, w, 2), np.float32), np.zeros((h, w, 1), np.float32)
    for iy in range(max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1):
      for ix in range(max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1):
        y1, x1 = iy * stride[0], ix * stride[1]
        y2, x2 = min(y1 + crop[0], h), min(x1 + crop[1], w)
        y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
        total[y1:y2, x1:x2] += forward(image[None, y1:y2, x1:x2])[0]
        count[y1:y2, x1:x2] += 1
    return total / count

  for i, (h, w) in enumerate(sizes):
    if h >= crop[0]:
      np.testing.assert_allclose(out[i, :h, :w], mmseg_slide(images[i, :h, :w]), rtol=1e-5, atol=1e-6)
    else:  # the window keeps the crop's size, padding included
      np.testing.assert_allclose(out[i, :crop[0], :w], mmseg_slide(images[i, :crop[0], :w]), rtol=1e-5, atol=1e-6)


def test_eval_batches_through_worker_processes_are_the_main_process_batches():
  config = protocol_config()
  recs = records()
  here = list(pipeline.eval_batches(config, recs, 3, num_workers=0))
  there = list(pipeline.eval_batches(config, recs, 3, num_workers=2))  # order kept, blanks last
  assert len(here) == len(there) == 2
  for a, b in zip(here, there):
    assert set(a) == set(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_drawn_rows_are_at_the_stored_label_size():
  family = Family(protocol_config())
  recs = records()
  batch = next(pipeline.eval_batches(family.config, recs, 6, family=family))  # 4 records + 2 blanks
  preds = np.ones(batch["label"].shape, np.int32)
  shown = family.shown(batch, preds)
  assert len(shown) == 4  # the blanks are left out
  for (image, label, pred), r in zip(shown, recs):
    h, w = r["label"].shape[:2]
    assert image.shape == (48, 152, 3) and label.shape == pred.shape == (48, 152)  # one size: one grid
    assert (pred[:h, :w] == 1).all() and (pred[h:] == 255).all() and (pred[:, w:] == 255).all()
    ih, iw = transforms.keep_ratio_size((h, w), 16, 64)
    want = cv2.resize(cv2.resize(r["image"], (iw, ih), interpolation=cv2.INTER_LINEAR), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(image[:h, :w], want)
