"""Training augmentations: random scale + crop computed on the crop window only equals
resize-then-crop; rotation, Gaussian blur and base-size scaling keep image and label
aligned and are a function of the record's random generator."""
import cv2
import ml_collections
import numpy as np
import pytest

from jaxseg.config import IMAGENET_MEAN, base_config
from jaxseg.data import transforms
from jaxseg.errors import ConfigError

PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [40, 220, 220]], np.uint8)


def smooth_image(rng, h, w):
  """Photograph-like content: upsampled noise (bilinear resampling errors stay small)."""
  low = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
  return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


def block_label(rng, h, w, block=24, ignore_band=True):
  """Blocks of random classes (0..4), with a thin ignore band like the datasets'."""
  label = rng.integers(0, len(PALETTE), (h // block + 1, w // block + 1)).astype(np.uint8)
  label = label.repeat(block, 0).repeat(block, 1)[:h, :w]
  if ignore_band:
    label[h // 3:h // 3 + 2] = 255
  return np.ascontiguousarray(label)


def painted(label):
  """An image whose colour says the class: PALETTE[label], ignore painted grey."""
  return np.where(label[..., None] == 255, np.uint8(128), PALETTE[np.minimum(label, len(PALETTE) - 1)])


def resize_then_crop(image, label, rng, crop, scale_range, step=0.0, cat_max_ratio=1.0):
  """The whole-record reference: resize (label nearest at pixel centres), pad, crop."""
  h, w = transforms.scaled_size(label.shape, transforms.draw_scale(rng, scale_range, step))
  image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
  label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
  return transforms.random_crop(image, label, rng, crop, cat_max_ratio)


@pytest.mark.parametrize("scale_range,step", [((0.5, 2.0), 0.0), ((0.5, 2.0), 0.25), ((0.2, 0.6), 0.0)])
def test_crop_window_resampling_equals_resize_then_crop(scale_range, step):
  """Same draws, same crops: the image within bilinear rounding (OpenCV's fixed-point
  weights differ between resize and warpAffine), the label exact but for a few pixels
  on exact rounding ties. (0.2, 0.6) puts most crops partly in the padding."""
  crop = (96, 160)
  image_err, label_err = [], []
  for seed in range(12):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(60, 300), rng.integers(60, 300)
    image, label = smooth_image(rng, h, w), block_label(rng, h, w)
    ours = transforms.scale_rotate_crop(image, label, np.random.default_rng(100 + seed), crop, scale_range, step,
                                        cat_max_ratio=0.75)
    theirs = resize_then_crop(image, label, np.random.default_rng(100 + seed), crop, scale_range, step, 0.75)
    assert ours[0].shape == theirs[0].shape == (*crop, 3) and ours[1].shape == theirs[1].shape == crop
    assert ours[0].dtype == np.uint8 and ours[1].dtype == np.uint8
    image_err.append(np.abs(ours[0].astype(int) - theirs[0]).max())
    label_err.append(np.mean(ours[1] != theirs[1]))
    np.testing.assert_array_equal(ours[1] == 255, theirs[1] == 255)  # the padding is where it was
  assert max(image_err) <= 3, image_err
  assert max(label_err) <= 1e-3, label_err


def test_base_size_sets_the_short_side():
  """Record 100x200, base size 50, ratio 1: the canvas is 50x100, the rest of a 64x128
  crop is padding (label ignore, image 0), whatever the record's own size."""
  rng = np.random.default_rng(0)
  image, label = smooth_image(rng, 100, 200), block_label(rng, 100, 200, ignore_band=False)
  img, lab = transforms.scale_rotate_crop(image, label, rng, (64, 128), (1.0, 1.0), base_size=50)
  assert (lab[:50, :100] != 255).all() and (lab[50:] == 255).all() and (lab[:, 100:] == 255).all()
  assert (img[50:] == 0).all() and (img[:, 100:] == 0).all()
  # The ratio multiplies the base size: 1.5 x 50 = 75 rows.
  lab = transforms.scale_rotate_crop(image, label, rng, (80, 160), (1.5, 1.5), base_size=50)[1]
  assert (lab[:75, :150] != 255).all() and (lab[75:] == 255).all()


def test_rotation_turns_about_the_canvas_centre_counter_clockwise():
  """Against rotating the whole resized record (PSPNet's code: cv2.getRotationMatrix2D
  about the centre, canvas size kept, label nearest with ignore fill), then cropping."""
  rng = np.random.default_rng(1)
  image, label = smooth_image(rng, 150, 210), block_label(rng, 150, 210, block=30)
  fill = IMAGENET_MEAN
  compared = 0
  for seed in range(10):
    draw = np.random.default_rng(seed)
    transforms.draw_scale(draw, (1.2, 1.2))
    draw.random()
    angle = draw.uniform(-10, 10)
    if abs(angle) < 3:  # compare visible rotations only
      continue
    compared += 1
    img, lab = transforms.scale_rotate_crop(image, label, np.random.default_rng(seed), (128, 128), (1.2, 1.2),
                                            rotate_degrees=10.0, rotate_prob=1.0, image_fill=fill)
    h, w = transforms.scaled_size(label.shape, 1.2)
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    big = cv2.warpAffine(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR), m, (w, h),
                         flags=cv2.INTER_LINEAR, borderValue=fill)
    big_lab = cv2.warpAffine(cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT), m, (w, h),
                             flags=cv2.INTER_NEAREST, borderValue=255)
    y0, x0 = draw.integers(0, h - 128 + 1), draw.integers(0, w - 128 + 1)
    ref_img, ref_lab = big[y0:y0 + 128, x0:x0 + 128], big_lab[y0:y0 + 128, x0:x0 + 128]
    assert np.mean(lab != ref_lab) < 0.01  # two nearest resamplings vs one: boundary pixels only
    assert np.mean(np.abs(img.astype(int) - ref_img)) < 1.5
  assert compared >= 4
  # A crop of the whole canvas shows the four uncovered corners: ignore, and the fill.
  img, lab = transforms.scale_rotate_crop(image, label, np.random.default_rng(0), (150, 210), (1.0, 1.0),
                                          rotate_degrees=10.0, rotate_prob=1.0, image_fill=fill)
  for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
    assert lab[y, x] == 255 and tuple(img[y, x]) == tuple(np.round(fill).astype(np.uint8))


def aligned_fraction(img, lab, tol):
  """Among labelled pixels whose 9x9 neighbourhood has one class (the blur reaches 2
  pixels, a 2x bilinear upscale 2 more), the fraction whose
  colour is PALETTE[class] within `tol`."""
  interior = np.zeros(lab.shape, bool)
  for k in range(len(PALETTE)):
    # borderValue 0: the class beyond the crop's edge is unknown
    interior |= cv2.erode((lab == k).astype(np.uint8), np.ones((9, 9), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0).astype(bool)
  if interior.sum() < 100:
    return None
  err = np.abs(img.astype(int) - PALETTE[np.minimum(lab, len(PALETTE) - 1)]).max(-1)
  return float(np.mean(err[interior] <= tol))


def test_rotation_blur_flip_keep_image_and_label_aligned():
  """Property test over random records, sizes, scales, angles, blurs and flips: where
  the label says class k (away from class boundaries), the image shows class k's
  colour; where the rotation or the padding uncovered the canvas, the label is ignore."""
  cfg = ml_collections.ConfigDict(dict(base_config().input))
  cfg.update(dict(crop_size=(96, 128), scale_range=(0.5, 2.0), scale_step=0.0, photometric=False, flip=True,
                  cat_max_ratio=1.0, rotate_degrees=10.0, rotate_prob=0.5, blur_prob=0.5, blur_kernel=5,
                  blur_sigma=(0.0, 0.0)))
  transforms.check_train_input(cfg)
  fractions, rotated = [], 0
  for seed in range(40):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(50, 260), rng.integers(50, 260)
    label = block_label(rng, h, w)
    out = transforms.train_transform({"image": painted(label), "label": label}, np.random.default_rng(seed), cfg,
                                     255)
    again = transforms.train_transform({"image": painted(label), "label": label}, np.random.default_rng(seed), cfg,
                                       255)
    np.testing.assert_array_equal(out["image"], again["image"])  # a function of the record's generator
    np.testing.assert_array_equal(out["label"], again["label"])
    assert set(np.unique(out["label"])) <= set(range(len(PALETTE))) | {255}
    f = aligned_fraction(out["image"], out["label"], tol=2)
    if f is not None:
      fractions.append(f)
    rotated += int((out["label"][[0, 0, -1, -1], [0, -1, 0, -1]] == 255).sum() >= 2)
  assert len(fractions) > 30 and min(fractions) > 0.995, fractions
  assert rotated >= 5  # some records were rotated (uncovered corners) or padded


def test_gaussian_blur_as_configured():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.gaussian_blur(image, rng, 5), cv2.GaussianBlur(image, (5, 5), 0))
  # FastFCN's kind: sigma uniform in a range, window from the sigma; a function of the generator.
  a = transforms.gaussian_blur(image, np.random.default_rng(3), 0, (0.6, 1.0))
  sigma = np.random.default_rng(3).uniform(0.6, 1.0)
  np.testing.assert_array_equal(a, cv2.GaussianBlur(image, (0, 0), sigma))
  assert a.std() < image.std()
  assert transforms.gaussian_blur(image, rng, 0, (0.0, 0.0)) is image


@pytest.mark.parametrize("key,value", [("blur_kernel", 4), ("blur_sigma", (1.0, 0.5)), ("rotate_prob", 1.5),
                                       ("rotate_degrees", -1.0), ("base_size", -5), ("rotate_image_fill", (1, 2))])
def test_bad_augmentation_settings_name_the_key(key, value):
  cfg = ml_collections.ConfigDict(dict(base_config().input))
  cfg.blur_prob = 0.5
  cfg[key] = value
  with pytest.raises(ConfigError, match=f"input.{key}"):
    transforms.check_train_input(cfg)


def test_defaults_leave_the_new_augmentations_off():
  cfg = base_config().input
  assert cfg.rotate_degrees == 0 and cfg.blur_prob == 0 and cfg.base_size == 0


def test_training_stream_applies_the_input_keys():
  """pipeline.train_dataset hands config.input to the transform: with rotation, blur and
  a base size set, batches are still a function of (seed, position), and a bad value
  is refused when the stream is built."""
  from jaxseg.data import pipeline
  rng = np.random.default_rng(0)
  labels = [block_label(rng, int(rng.integers(60, 120)), int(rng.integers(60, 120))) for _ in range(6)]
  source = [{"image": painted(lab), "label": lab} for lab in labels]
  config = base_config()
  config.train.batch_size = 2
  config.input.update(dict(crop_size=(48, 64), photometric=False, cat_max_ratio=1.0, base_size=60,
                           rotate_degrees=10.0, rotate_prob=1.0, blur_prob=1.0, blur_kernel=0, blur_sigma=(0.0, 1.0)))
  a, b = pipeline.train_dataset(config, source)[1], pipeline.train_dataset(config, source)[1]
  assert a["image"].shape == (2, 48, 64, 3) and a["label"].shape == (2, 48, 64)
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["label"], b["label"])
  config.input.blur_kernel = 4
  with pytest.raises(ConfigError, match="input.blur_kernel"):
    pipeline.train_dataset(config, source)
