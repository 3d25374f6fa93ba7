"""Test-time augmentation of the detector (jaxseg.models.detection.augment, Detectron's
im_detect_bbox_aug / im_detect_mask_aug): the views' images against torch's bilinear
resize and numpy's mirror, the box mappings, and the merged detections of a tiny PANet
over three views (identity, flip, x1.5) against a numpy reference built from each view's
own outputs: the union of their candidates mapped back, per-class NMS, top D; the mask
probabilities the numpy average of each view's mask head on the boxes mapped into it,
the flipped one's mirrored back. One view of scale 1 gives the plain detector's outputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxseg.errors import ConfigError
from jaxseg.families.detection import eval_views
from jaxseg.models.detection import augment
from tests.conftest import load_config
from tests.test_detection_ops import np_nms
from tests.test_panet_model import SIZES, init_and_detect, tiny_model


def test_views_resize_and_mirror_each_image_region():
  rng = np.random.RandomState(0)
  images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  regions = np.array([[64, 64], [48, 40]], np.int32)
  mirrored = np.asarray(augment.resize_images(jnp.asarray(images), regions, regions, (64, 64), True))
  for b, (h, w) in enumerate(regions):
    np.testing.assert_array_equal(mirrored[b, :h, :w], images[b, :h, :w][:, ::-1])  # exact at scale 1
    assert not mirrored[b, h:].any() and not mirrored[b, :, w:].any()
  sizes = augment.view_sizes(regions, 1.5)
  canvas = augment.view_canvas((64, 64), 1.5)
  assert canvas == (128, 128) and np.asarray(sizes).tolist() == [[96, 96], [72, 60]]
  for flip in (False, True):
    out = np.asarray(augment.resize_images(jnp.asarray(images), regions, sizes, canvas, flip))
    for b, (h, w) in enumerate(regions):
      hv, wv = (int(v) for v in sizes[b])
      region = torch.from_numpy(images[b, :h, :w]).permute(2, 0, 1)[None]
      want = F.interpolate(region, size=(hv, wv), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
      np.testing.assert_allclose(out[b, :hv, :wv], want[:, ::-1] if flip else want, rtol=1e-5, atol=1e-3)
      assert not out[b, hv:].any() and not out[b, :, wv:].any()


def test_boxes_map_into_a_view_and_back():
  rng = np.random.RandomState(1)
  xy = rng.uniform(0, 30, (2, 5, 3, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(1, 30, xy.shape)], -1).astype(np.float32)
  regions = np.array([[64, 64], [48, 40]], np.float32)
  sizes = np.array([[96, 96], [72, 60]], np.float32)
  view = np.asarray(augment.to_view(jnp.asarray(boxes), regions, sizes, True))
  for b in range(2):
    ry, rx = sizes[b] / regions[b]
    x0, y0, x1, y1 = np.moveaxis(boxes[b], -1, 0)
    want = np.stack([sizes[b, 1] - x1 * rx, y0 * ry, sizes[b, 1] - x0 * rx, y1 * ry], -1)  # mirrored: x -> w - x
    np.testing.assert_allclose(view[b], want, rtol=1e-6, atol=1e-5)
  for flip in (False, True):
    back = augment.from_view(augment.to_view(jnp.asarray(boxes), regions, sizes, flip), regions, sizes, flip)
    np.testing.assert_allclose(np.asarray(back), boxes, rtol=1e-6, atol=1e-5)


def test_eval_views_of_the_config():
  config = load_config("panet_coco", "tiny")
  assert eval_views(config) == ((1.0, False),)
  config.eval.update(dict(scales=(0.5, 1.0), flip=True))
  assert eval_views(config) == ((0.5, False), (0.5, True), (1.0, False), (1.0, True))
  config.eval.scales = (1.0, -2.0)
  with pytest.raises(ConfigError, match="eval.scales"):
    eval_views(config)
  ms = load_config("panet_coco", "ms")
  assert ms.eval.flip and 1.0 in ms.eval.scales and len(ms.eval.scales) == 9


VIEWS = ((1.0, False), (1.0, True), (1.5, False))


@pytest.fixture(scope="module")
def merged():
  """A tiny PANet with randomised predictors, merged over VIEWS, with what each view's
  detector gave inside the same program (its candidates; the boxes its mask head got and
  its masks); and the plain detector beside the merge over the one view (1.0, no flip)."""
  rng = np.random.RandomState(3)
  images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  images[1, 48:], images[1, :, 40:] = 0, 0  # the second image's region is 48 x 40
  base = tiny_model()
  variables, _ = init_and_detect(base, jnp.asarray(images / 64 - 2))
  params = jax.tree.map(lambda x: x, variables["params"])
  for name in ("cls_score", "bbox_pred"):  # scores and deltas far from the initial constants
    kernel = params["box_head"][name]["kernel"]
    params["box_head"][name]["kernel"] = kernel + jnp.asarray(rng.randn(*kernel.shape).astype(np.float32) * 0.3)
  variables = {**variables, "params": params}
  canvases = [augment.view_canvas((64, 64), s) for s, _ in VIEWS]
  models = {c: base.clone(image_size=c, detections_pre_nms=90) for c in set(canvases)}

  def program(x):
    seen = {"candidates": [None] * len(VIEWS), "masks": [None] * len(VIEWS)}

    def apply(i, view, sizes, **kw):
      return models[canvases[i]].apply(variables, view / 64 - 2, None, sizes, train=False, **kw)

    def run(i, view, sizes, **kw):
      out = apply(i, view, sizes, **kw)
      if "boxes" in kw:
        seen["masks"][i] = {"sizes": sizes, "boxes": kw["boxes"], "classes": kw["classes"], "masks": out["masks"]}
      else:
        seen["candidates"][i] = {"sizes": sizes, **out["candidates"]}
      return out

    out = augment.detect(run, VIEWS, canvases, x, SIZES, base.nms_threshold, base.detections, 90)
    single = augment.detect(apply, VIEWS[:1], canvases[:1], x, SIZES, base.nms_threshold, base.detections,
                            base.detections_pre_nms)
    plain = base.apply(variables, x / 64 - 2, None, SIZES)
    return out, seen, single, plain

  return (base, *jax.tree.map(np.asarray, jax.jit(program)(jnp.asarray(images))))


def np_from_view(boxes, region, size, flip):
  w = size[1]
  if flip:
    boxes = np.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], -1)
  ry, rx = region / size
  return boxes * np.array([rx, ry, rx, ry], np.float32)


def test_merged_boxes_are_the_nms_of_the_union(merged):
  base, out, seen, _, _ = merged
  for b in range(2):
    cands = []  # (score, class, box) of every view, in its own validity
    for (_, flip), found in zip(VIEWS, seen["candidates"]):
      boxes = np_from_view(found["boxes"][b], SIZES[b], found["sizes"][b], flip)
      for p, k in zip(*np.nonzero(found["valid"][b])):
        cands.append((found["scores"][b, p, k], k, boxes[p, k]))
    keep = []
    for c in set(k for _, k, _ in cands):
      mine = [x for x in cands if x[1] == c]
      keep += [mine[j] for j in np_nms(np.array([x[2] for x in mine]), [x[0] for x in mine], [True] * len(mine),
                                       base.nms_threshold)]
    want = sorted(keep, key=lambda x: -x[0])[:base.detections]
    n = int(out["valid"][b].sum())
    assert n == len(want) == base.detections
    np.testing.assert_allclose(out["scores"][b, :n], [w[0] for w in want], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"][b, :n], [w[1] for w in want])
    np.testing.assert_allclose(out["boxes"][b, :n], np.array([w[2] for w in want]), rtol=1e-5, atol=1e-4)
  # the detections come from more than one view
  sources = {v for b in range(2) for v, found in enumerate(seen["candidates"])
             if np.isin(out["scores"][b], found["scores"][b][found["valid"][b]]).any()}
  assert len(sources) > 1


def np_to_view(boxes, region, size, flip):
  ry, rx = size / region
  boxes = boxes * np.array([rx, ry, rx, ry], np.float32)
  if flip:
    boxes = np.stack([size[1] - boxes[..., 2], boxes[..., 1], size[1] - boxes[..., 0], boxes[..., 3]], -1)
  return boxes


def test_merged_masks_are_the_soft_average_of_the_views(merged):
  _, out, seen, _, _ = merged
  total = 0.0
  for (_, flip), view in zip(VIEWS, seen["masks"]):
    boxes = np.stack([np_to_view(out["boxes"][b], SIZES[b], view["sizes"][b], flip) for b in range(2)])
    np.testing.assert_allclose(view["boxes"], boxes, rtol=1e-6, atol=1e-4)  # the final boxes in the view's frame
    np.testing.assert_array_equal(view["classes"], out["classes"])
    total = total + (view["masks"][..., ::-1] if flip else view["masks"])
  want = np.where(out["valid"][..., None, None], total / len(VIEWS), 0.0)
  np.testing.assert_allclose(out["masks"], want, rtol=1e-5, atol=1e-6)
  assert 0.05 < out["masks"][out["valid"]].std()  # not constant
  flipped = seen["masks"][1]["masks"][out["valid"]]
  assert np.abs(flipped - flipped[..., ::-1]).max() > 0.05  # the flip back matters


def test_one_view_of_scale_one_is_the_plain_detector(merged):
  _, _, _, plain, single = merged
  for key in ("boxes", "classes", "scores", "valid"):
    np.testing.assert_array_equal(single[key], plain[key], err_msg=key)
  np.testing.assert_allclose(single["masks"], plain["masks"], rtol=1e-6, atol=1e-7)


def test_family_detect_runs_every_view_on_its_canvas():
  """The family's wiring (traced, not compiled): eval.scales (1.0, 1.5) with eval.flip
  build one detector per view canvas (64, and 128 for x1.5) and merge to D detections."""
  from jaxseg import families
  config = load_config("panet_coco", "tiny")
  config.input.update(dict(eval_size=(64, 64), crop_size=(64, 64)))
  config.eval.update(dict(scales=(1.0, 1.5), flip=True))
  family = families.get(config)
  model = family.build_model(train=False)
  batch = {"image": jnp.zeros((1, 64, 64, 3), jnp.uint8), "image_size": jnp.array([[64, 48]], jnp.int32)}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), None,
                                                batch["image_size"]))
  out = jax.eval_shape(lambda v, b: family.detect(model, v, b), variables, batch)
  d = model.detections
  assert {k: v.shape for k, v in out.items()} == {"boxes": (1, d, 4), "classes": (1, d), "scores": (1, d),
                                                  "valid": (1, d), "masks": (1, d, 28, 28)}
  assert sorted(family._view_models) == [(64, 64), (128, 128)]
