"""`shapes`: a deterministic synthetic scene-parsing dataset embedded in jaxseg.

Each image is a cluttered background (muted gradients, noise, thin lines and dots
of any colour, all labelled background) with 2-6 objects of five shape classes drawn
in random order, so later objects occlude earlier ones. Objects vary in size, angle,
colour and texture (solid, stripes, checker, noise); each class's hues lie in a band
that overlaps its neighbours', so colour hints at the class and shape decides it. As in
PASCAL VOC, a thin band along every object boundary is labelled 255 (ignore).
Everything derives from (split, index), so every build is identical.
"""
from __future__ import annotations

import cv2
import numpy as np
import tensorflow_datasets as tfds

CLASSES = ("background", "disk", "square", "triangle", "ring", "cross")
PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48))
SPLITS = {"train": (1200, 0), "val": (200, 1)}  # name -> (size, seed stream)


def _hsv_to_rgb(h, s, v):
  """One colour, hue in degrees, saturation and value in [0, 1] -> RGB in [0, 255]."""
  hsv = np.array([[[h / 2 % 180, s * 255, v * 255]]], np.uint8)
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _texture(rng, cls, h, w):
  """An (h, w, 3) float pattern: solid, stripes, checker or noise. Each class has a
  hue band (72 degrees apart, +-30 jitter, so neighbours overlap); saturation,
  brightness and pattern vary freely."""
  hue = 72 * (cls - 1) + rng.uniform(-30, 30)
  a = _hsv_to_rgb(hue, rng.uniform(0.55, 1), rng.uniform(0.5, 1))
  b = _hsv_to_rgb(hue + rng.uniform(-20, 20), rng.uniform(0.55, 1), rng.uniform(0.25, 1))
  kind = rng.integers(4)
  yy, xx = np.mgrid[:h, :w]
  if kind == 0:
    mix = np.zeros((h, w))
  elif kind == 1:
    period, angle = rng.integers(4, 10), rng.uniform(0, np.pi)
    mix = ((xx * np.cos(angle) + yy * np.sin(angle)) // period) % 2
  elif kind == 2:
    cell = rng.integers(3, 8)
    mix = (xx // cell + yy // cell) % 2
  else:
    mix = rng.uniform(0, 1, (h, w))
  return a + (b - a) * mix[..., None]


def _shape_mask(rng, cls, h, w):
  """A boolean mask of one shape of class `cls` at a random place, size and angle."""
  mask = np.zeros((h, w), np.uint8)
  r = int(rng.uniform(0.12, 0.24) * min(h, w))
  cx, cy = rng.integers(r // 2, w - r // 2), rng.integers(r // 2, h - r // 2)
  angle = rng.uniform(0, 2 * np.pi)

  def polygon(radii, angles):
    pts = np.stack([cx + radii * np.cos(angles + angle), cy + radii * np.sin(angles + angle)], -1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)

  if cls == 1:  # disk
    cv2.circle(mask, (int(cx), int(cy)), r, 1, -1)
  elif cls == 2:  # square
    polygon(np.full(4, r * 1.1), np.arange(4) * np.pi / 2)
  elif cls == 3:  # triangle
    polygon(np.full(3, r * 1.2), np.arange(3) * 2 * np.pi / 3)
  elif cls == 4:  # ring
    cv2.circle(mask, (int(cx), int(cy)), r, 1, -1)
    cv2.circle(mask, (int(cx), int(cy)), max(2, int(r * rng.uniform(0.45, 0.6))), 0, -1)
  else:  # cross: two bars
    t = rng.uniform(0.3, 0.45)
    corners = [(-1, -t), (-t, -t), (-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1),
               (-t, 1), (-t, t), (-1, t)]
    c = np.array(corners) * r
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cv2.fillPoly(mask, [np.round(c @ rot.T + (cx, cy)).astype(np.int32)], 1)
  return mask.astype(bool)


def background(rng, h, w):
  """A muted colour gradient, noise, and clutter (thin lines, small dots) in any
  colour: the float (h, w, 3) canvas the shapes are drawn on."""
  yy, xx = np.mgrid[:h, :w] / max(h, w)
  c0, c1 = (_hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.35), rng.uniform(0.2, 0.9)) for _ in "ab")
  t = (xx * np.cos(rng.uniform(0, 6.3)) + yy * np.sin(rng.uniform(0, 6.3)))[..., None]
  image = np.ascontiguousarray(c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6) + rng.normal(0, 12, (h, w, 3)))
  for _ in range(rng.integers(3, 10)):
    p, q = rng.integers(0, (w, h)), rng.integers(0, (w, h))
    cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q),
             rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)))
  for _ in range(rng.integers(3, 12)):
    cv2.circle(image, tuple(int(v) for v in rng.integers(0, (w, h))), int(rng.integers(1, 4)),
               rng.uniform(0, 255, 3).tolist(), -1)
  return image


def make_example(split: str, index: int):
  """The (image uint8 HxWx3, label uint8 HxW) pair number `index` of `split`."""
  rng = np.random.default_rng([SPLITS[split][1], index])
  h, w = (int(v) for v in rng.integers(14, 21, 2) * 8)  # 112..160

  image = background(rng, h, w)

  label = np.zeros((h, w), np.uint8)
  for _ in range(rng.integers(2, 7)):
    cls = int(rng.integers(1, len(CLASSES)))
    mask = _shape_mask(rng, cls, h, w)
    image[mask] = _texture(rng, cls, h, w)[mask]
    label[mask] = cls

  # Ignore band: pixels within 1 px of a boundary between two labels.
  grown = cv2.dilate(label, np.ones((3, 3), np.uint8))
  shrunk = cv2.erode(label, np.ones((3, 3), np.uint8))
  label[grown != shrunk] = 255
  image = cv2.GaussianBlur(image, (3, 3), 0.6) + rng.normal(0, 4, (h, w, 3))
  return np.clip(image, 0, 255).astype(np.uint8), label


class Shapes(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
            "file_name": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(classes=list(CLASSES), palette=[list(p) for p in PALETTE]),
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    for i in range(SPLITS[split][0]):
      image, label = make_example(split, i)
      yield i, {"image": image, "label": label[..., None], "file_name": f"{split}_{i:05d}"}
