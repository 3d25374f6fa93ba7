"""Instance and panoptic targets (jaxseg.data.instances): after random scale, rotation,
crop and flip, every instance mask, its box, its class, the semantic map, the panoptic
map and the image agree pixel for pixel, on the embedded shapes_panoptic records and on
random synthetic ones, over many seeds; the stream is reproducible and resumes
exactly; an image with too many instances keeps the largest and counts the others,
which reach train_log.jsonl; bad segments fail naming the record and the segment."""
import json

import cv2
import numpy as np
import pytest

from jaxseg import families, train
from jaxseg.config import base_config
from jaxseg.data import instances, pipeline, transforms
from jaxseg.data.builders import shapes_panoptic as sp
from jaxseg.errors import ConfigError, InputDataError
from jaxseg.panoptic_quality import id_to_rgb
from tests import instance_count_family
from tests.conftest import load_config

NUM_CLASSES = 8
FILL = (100, 150, 200)


def config(**inputs):
  c = base_config()
  c.dataset.num_classes = NUM_CLASSES
  c.input.update(dict(crop_size=(64, 48), eval_size=(160, 160), scale_range=(0.5, 2.0), scale_step=0.0,
                      cat_max_ratio=1.0, crop_image_fill=FILL, max_instances=100))
  c.input.update(inputs)
  return c


def shapes_record(split, index):
  """A shapes_panoptic record as the TFDS source gives it (panoptic as COCO's PNG)."""
  r = sp.make_example(split, index)
  return dict(r, panoptic=id_to_rgb(r["panoptic"]))


def synthetic_record(rng):
  """Random rectangles and disks with random ids (up to 2^24 - 1: all three PNG channels),
  categories, crowd flags and void; every segment painted its own flat colour."""
  h, w = (int(v) for v in rng.integers(24, 120, 2))
  ids = np.zeros((h, w), np.int64)
  n = int(rng.integers(1, 25))
  seg_ids = rng.choice(np.arange(1, 2 ** 24), n, replace=False)
  yy, xx = np.mgrid[:h, :w]
  for sid in seg_ids:
    y, x = rng.integers(0, h), rng.integers(0, w)
    if rng.random() < 0.5:
      ids[y:y + rng.integers(1, h // 2 + 2), x:x + rng.integers(1, w // 2 + 2)] = sid
    else:
      ids[(yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(1, 15) ** 2] = sid
  ids[rng.integers(0, h):][:rng.integers(1, 4)] = 0  # a void band
  present = [s for s in seg_ids if (ids == s).any()]
  colours = rng.integers(0, 256, (len(present), 3))
  image = np.full((h, w, 3), 128, np.uint8)
  for sid, colour in zip(present, colours):
    image[ids == sid] = colour
  segments = {"id": np.array(present, np.int64).reshape(-1),
              "category": rng.integers(0, NUM_CLASSES, len(present)),
              "iscrowd": (rng.random(len(present)) < 0.2).astype(np.int64)}
  return {"image": image, "panoptic": id_to_rgb(ids), "segments": segments, "file_name": "synthetic"}


ISTHING = np.array([False, True, True, True, True, True, False, True])


def check_consistent(out, record, which, max_instances, colours=None):
  """Every valid instance is exactly the pixels of one segment of the panoptic map, of
  its category and crowd flag; its box is its mask's; the label is the panoptic map's
  categories; the instances are the largest qualifying segments and the rest counted.
  With `colours`: (pixels 2 px inside a segment whose image colour is the segment's,
  such pixels); nearest sampling may skip a segment thinner than the sampling step,
  which the bilinear image still shows, hence not all of them."""
  seg = record["segments"]
  info = {int(i): (int(c), int(z)) for i, c, z in zip(seg["id"], seg["category"], seg["iscrowd"])}
  pan, label = out["panoptic"], out["label"]
  expected_label = np.full(pan.shape, 255)
  for sid in np.unique(pan):
    if sid:
      expected_label[pan == sid] = info[int(sid)][0]
  np.testing.assert_array_equal(label, expected_label)
  crowd = np.isin(pan, [i for i, (_, z) in info.items() if z])
  np.testing.assert_array_equal(out["panoptic_crowd"], crowd)
  ids, counts = np.unique(pan[pan != 0], return_counts=True)
  qualify = [(c, int(i)) for i, c in zip(ids, counts) if which == "all" or ISTHING[info[int(i)][0]]]
  valid = out["instance_valid"]
  assert valid.sum() == min(len(qualify), max_instances)
  assert out["count_instances_dropped"] == len(qualify) - valid.sum()
  assert valid[:valid.sum()].all()  # valid entries first
  areas = []
  for mask, cls, box, crowd, ok in zip(out["instance_masks"], out["instance_classes"], out["instance_boxes"],
                                       out["instance_iscrowd"], valid):
    if not ok:
      assert not mask.any() and not box.any() and cls == 0 and crowd == 0
      continue
    sids = np.unique(pan[mask.astype(bool)])
    assert len(sids) == 1 and sids[0] != 0
    np.testing.assert_array_equal(mask, pan == sids[0])
    assert (cls, crowd) == info[int(sids[0])]
    ys, xs = np.nonzero(mask)
    np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    areas.append(mask.sum())
  kept = sorted(areas, reverse=True)
  assert kept == sorted((c for c, _ in qualify), reverse=True)[:len(kept)]  # the largest were kept
  if colours is not None:  # the image moved with the map: each segment's flat colour inside it
    grown = cv2.dilate(pan.astype(np.float32), np.ones((5, 5), np.uint8))  # 2 px from any edge
    shrunk = cv2.erode(pan.astype(np.float32), np.ones((5, 5), np.uint8))
    labelled = (pan != 0) & (grown == shrunk)
    colour_of = {int(i): record["image"][rgb_to_ids(record["panoptic"]) == i][0] for i in ids}
    expected = np.array([colour_of[int(i)] for i in pan[labelled]]).reshape(-1, 3)
    close = np.abs(out["image"][labelled].astype(int) - expected).max(1) <= 2
    return close.sum(), close.size
  return 0, 0


def rgb_to_ids(rgb):
  rgb = rgb.astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


MODES = [dict(scale_mode="ratio"), dict(scale_mode="ratio", rotate_degrees=20.0, rotate_prob=1.0),
         dict(scale_mode="short_side", short_side_range=(24, 160), short_side_step=8, max_long_side=200),
         dict(scale_mode="fit", scale_range=(0.1, 2.0))]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m["scale_mode"] + ("_rotate" if "rotate_degrees" in m else ""))
def test_masks_boxes_and_maps_agree_after_augmentation(mode):
  c = config(**mode)
  instances.check_input(c.input)
  close = total = 0
  for seed in range(12):
    for record, which, colours in ((shapes_record("val", seed), "all", None),
                                   (synthetic_record(np.random.default_rng(seed)), "things", True)):
      c.input.photometric = colours is None
      c.input.max_instances = [100, 3][seed % 2]
      out = instances.train_targets(record, np.random.default_rng(1000 + seed), c, ISTHING, which, panoptic=True)
      assert out["image"].shape == (64, 48, 3) and out["instance_masks"].shape == (c.input.max_instances, 64, 48)
      n, m = check_consistent(out, record, which, c.input.max_instances, colours)
      close, total = close + n, total + m
  assert close / total > 0.98, (close, total)  # an unflipped image scores 0.42


def test_padding_is_fill_ignore_and_void_and_low_resolution_masks_subsample():
  record = synthetic_record(np.random.default_rng(5))
  h, w = record["image"].shape[:2]
  c = config(scale_range=(1.0, 1.0), flip=False, photometric=False, crop_size=(128, 128), instance_mask_stride=4)
  out = instances.train_targets(record, np.random.default_rng(0), c, ISTHING, "all", panoptic=True)
  assert (out["image"][h:] == FILL).all() and (out["image"][:, w:] == FILL).all()
  assert (out["label"][h:] == 255).all() and (out["panoptic"][:, w:] == 0).all()
  full = instances.train_targets(record, np.random.default_rng(0), config(scale_range=(1.0, 1.0), flip=False,
                                 photometric=False, crop_size=(128, 128)), ISTHING, "all", panoptic=True)
  np.testing.assert_array_equal(out["instance_masks"], full["instance_masks"][:, 2::4, 2::4])
  np.testing.assert_array_equal(out["instance_boxes"], full["instance_boxes"])


def test_many_instances_keep_the_largest_and_count_the_rest():
  """400 segments of distinct sizes, at most 7 kept: the 7 largest, 393 counted."""
  ids = np.zeros((200, 200), np.int64)
  sizes = {}
  for k in range(400):
    y, x = divmod(k, 20)
    side = 1 + k % 10
    ids[10 * y:10 * y + side, 10 * x:10 * x + side] = k + 1
    sizes[k + 1] = side * side
  record = {"image": np.zeros((200, 200, 3), np.uint8), "panoptic": id_to_rgb(ids),
            "segments": {"id": np.arange(1, 401), "category": np.full(400, 1), "iscrowd": np.zeros(400, np.int64)}}
  c = config(max_instances=7, eval_size=(200, 200))
  out = instances.eval_targets(record, c, ISTHING, "things", panoptic=True)
  assert out["instance_valid"].sum() == 7 and out["count_instances_dropped"] == 393
  assert sorted(out["instance_masks"].sum((1, 2)).tolist()) == [100] * 7
  check_consistent(out, record, "things", 7)


def test_eval_targets_are_the_record_padded():
  record = shapes_record("val", 1)
  out = instances.eval_targets(record, config(), ISTHING, "things", panoptic=True)
  h, w = record["image"].shape[:2]
  np.testing.assert_array_equal(out["image"][:h, :w], record["image"])
  np.testing.assert_array_equal(out["panoptic"][:h, :w], rgb_to_ids(record["panoptic"]))
  np.testing.assert_array_equal(out["label"][:h, :w], record["label"])
  check_consistent(out, record, "things", 100)
  blank = instances.blank(config(), train=False, panoptic=True)
  assert {k: (v.shape, v.dtype) for k, v in blank.items()} == \
         {k: (v.shape, v.dtype) for k, v in out.items() if not k.startswith("count_")}


def test_eval_targets_resize_the_image_and_keep_the_ground_truth_as_stored():
  """COCO's protocol: the image resized by the keep-ratio rule, the ground truth at the
  stored size on the label canvas; a record larger than that canvas fails naming the key."""
  record = shapes_record("val", 1)
  h, w = record["image"].shape[:2]
  c = config(eval_short_side=min(h, w) // 2, eval_size=(96, 96), eval_label_size=(h + 8, w + 16))
  out = instances.eval_targets(record, c, ISTHING, "things", panoptic=True, image_size=True)
  rh, rw = transforms.keep_ratio_size((h, w), min(h, w) // 2, 0)
  assert tuple(out["image_size"]) == (rh, rw) and tuple(out["label_size"]) == (h, w)
  image = cv2.resize(record["image"], (rw, rh), interpolation=cv2.INTER_LINEAR)
  np.testing.assert_array_equal(out["image"][:rh, :rw], image)
  assert out["image"].shape == (96, 96, 3) and (out["image"][rh:] == 0).all() and (out["image"][:, rw:] == 0).all()
  assert out["panoptic"].shape == out["label"].shape == (h + 8, w + 16)
  np.testing.assert_array_equal(out["panoptic"][:h, :w], rgb_to_ids(record["panoptic"]))
  np.testing.assert_array_equal(out["label"][:h, :w], record["label"])
  assert (out["panoptic"][h:] == 0).all() and (out["panoptic"][:, w:] == 0).all() and (out["label"][h:] == 255).all()
  check_consistent({k: v for k, v in out.items() if k != "image"}, record, "things", 100)
  blank = instances.blank(c, train=False, panoptic=True)
  assert {k: (v.shape, v.dtype) for k, v in blank.items()} == \
         {k: (v.shape, v.dtype) for k, v in out.items() if not k.startswith("count_") and not k.endswith("_size")}
  c.input.eval_label_size = (h - 1, w + 16)
  with pytest.raises(InputDataError, match=rf"record 1: image is {h}x{w} as stored.*input.eval_label_size"):
    instances.eval_targets(record, c, ISTHING, where="record 1")
  c.input.update(dict(eval_short_side=0, eval_size=(h, w - 1)))  # not resized: the labels share the image canvas
  with pytest.raises(InputDataError, match=rf"image is {h}x{w} as stored, larger than config input.eval_size"):
    instances.eval_targets(record, c, ISTHING, where="record 1")


def test_bad_segments_fail_naming_the_record_or_are_skipped_and_counted():
  record = shapes_record("val", 2)
  seg = record["segments"]
  missing = dict(record, segments={k: v[1:] for k, v in seg.items()})  # id seg["id"][0] unlisted
  with pytest.raises(InputDataError, match=rf"val_00002.*segment id {seg['id'][0]} is in the panoptic map but not"):
    instances.train_targets(missing, np.random.default_rng(0), config(), ISTHING, where="record 2 (val_00002)")
  empty = dict(record, segments={k: np.concatenate([v, v[:1] * 0 + (77777 if k == "id" else v[:1])])
                                 for k, v in seg.items() if k in ("id", "category", "iscrowd")})
  with pytest.raises(InputDataError, match="segment 77777 .* no pixel in the panoptic map"):
    instances.eval_targets(empty, config(), ISTHING, where="record 2")
  c = config(skip_bad_records=True, scale_range=(1.0, 1.0), crop_size=(160, 160), flip=False)
  out = instances.train_targets(missing, np.random.default_rng(0), c, ISTHING, "all", panoptic=True)
  assert out["count_bad_segments"] == 1 and seg["id"][0] not in out["panoptic"]
  assert instances.eval_targets(empty, c, ISTHING)["count_bad_segments"] == 1


def test_config_errors_name_the_key():
  for key, value in (("scale_mode", "lsj"), ("max_instances", 0), ("instance_mask_stride", 5)):
    with pytest.raises(ConfigError, match=f"input.{key}"):
      instances.check_input(config(**{key: value}).input)


class PanopticFamily:
  """The least a pipeline needs of a family: instance targets of every record."""

  def __init__(self, c):
    self.config = c

  def check_train_input(self):
    instances.check_input(self.config.input)

  def train_transform(self, record, rng, where="record"):
    return instances.train_targets(record, rng, self.config, ISTHING, "all", panoptic=True, where=where)


def test_stream_is_reproducible_and_resumes_exactly():
  c = config(scale_mode="fit", scale_range=(0.1, 2.0), max_instances=5)
  c.train.batch_size = 4
  source = [shapes_record("train", i) for i in range(6)]
  first = pipeline.train_iterator(pipeline.train_dataset(c, source, family=PanopticFamily(c)), c)
  batches = [next(first) for _ in range(3)]
  state = first.get_state()
  fourth = next(first)
  again = pipeline.train_iterator(pipeline.train_dataset(c, source, family=PanopticFamily(c)), c)
  for batch in batches:
    other = next(again)
    assert all(np.array_equal(batch[k], other[k]) for k in batch)
  resumed = pipeline.train_iterator(pipeline.train_dataset(c, source, family=PanopticFamily(c)), c)
  resumed.set_state(state)
  batch = next(resumed)
  assert all(np.array_equal(batch[k], fourth[k]) for k in fourth)
  assert batch["instance_masks"].shape == (4, 5, 64, 48) and batch["count_instances_dropped"].shape == (4,)


def test_dropped_instances_reach_the_train_log(data_dir, tmp_path):
  c = load_config("quickstart", "tiny")
  c.family = "tests.instance_count_family"
  c.train.update(dict(steps=2, log_every=1, ckpt_every=100, eval_every=100))
  c.evals = {}
  train.train_and_evaluate(c, str(tmp_path))
  log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
  family = families.get(c)
  from jaxseg.data import datasets
  source = datasets.source(family.builder, c.dataset.train_split)
  it = pipeline.train_iterator(pipeline.train_dataset(c, source, family=family), c)
  totals = np.cumsum([next(it)["count_instances_dropped"].sum() for _ in range(2)])
  assert [r["instances_dropped"] for r in log] == totals.tolist() and totals[-1] > 0
