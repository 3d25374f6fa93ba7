import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics
from jaxseg.families.semantic import segmentation_loss
from jaxseg.losses import cross_entropy
from tests.conftest import load_config


def numpy_ce(logits, labels, ignore=255, weights=None):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  valid = labels != ignore
  y = np.where(valid, labels, 0)
  nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
  w = valid.astype(np.float64) * (np.asarray(weights)[y] if weights is not None else 1.0)
  return (nll * w).sum() / w.sum()


@pytest.mark.parametrize("weights", [None, (0.5, 1.0, 2.0, 3.0)])
def test_cross_entropy_vs_numpy(weights):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 5, 4)).astype(np.float32) * 3
  labels = rng.integers(0, 4, (2, 6, 5)).astype(np.int32)
  labels[0, :2] = 255  # ignored pixels
  got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 255, weights)
  np.testing.assert_allclose(got, numpy_ce(logits, labels, 255, weights), rtol=1e-5)


def test_cross_entropy_upsamples_logits_to_the_labels():
  logits = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0, 1].set(10.0)
  labels = jnp.ones((1, 8, 8), jnp.int32)
  # Low-resolution logits are bilinearly resized to 8x8; the labels are never downsampled.
  up = jax.image.resize(logits, (1, 8, 8, 3), "bilinear")
  np.testing.assert_allclose(cross_entropy(logits, labels), numpy_ce(np.asarray(up), np.asarray(labels)),
                             rtol=1e-5)


def test_ignored_pixels_do_not_change_the_loss():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(1, 4, 4, 3)), jnp.float32)
  labels = rng.integers(0, 3, (1, 4, 4))
  a = labels.copy()
  a[0, 0] = 255
  b = a.copy()
  logits_b = logits.at[0, 0].set(100.0)  # wild logits where the label is ignored
  assert np.isclose(cross_entropy(logits, jnp.asarray(a)), cross_entropy(logits_b, jnp.asarray(b)))


def test_loss_weights_and_class_weights_from_config():
  config = load_config("quickstart", "tiny")
  config.loss.weights.aux = 0.4
  rng = np.random.default_rng(2)
  outputs = {"seg": jnp.asarray(rng.normal(size=(1, 4, 4, 6)), jnp.float32),
             "aux": jnp.asarray(rng.normal(size=(1, 4, 4, 6)), jnp.float32)}
  labels = jnp.asarray(rng.integers(0, 6, (1, 4, 4)))
  total, terms = segmentation_loss(outputs, labels, config)
  np.testing.assert_allclose(total, terms["seg"] + 0.4 * terms["aux"], rtol=1e-6)
  config.loss.class_weights = (1.0, 2.0)
  with pytest.raises(KeyError, match="class_weights"):
    segmentation_loss(outputs, labels, config)


def numpy_confusion(pred, label, k, ignore=255):
  cm = np.zeros((k, k), np.int64)
  for p, g in zip(pred.ravel(), label.ravel()):
    if g != ignore:
      cm[g, p] += 1
  return cm


def test_confusion_matrix_vs_numpy_on_host_and_device():
  rng = np.random.default_rng(3)
  label = rng.integers(0, 5, (3, 7, 9)).astype(np.uint8)
  label[rng.random(label.shape) < 0.2] = 255
  pred = rng.integers(0, 5, (3, 7, 9))
  expected = numpy_confusion(pred, label, 5)
  np.testing.assert_array_equal(metrics.confusion_matrix(pred, label, 5), expected)
  on_device = jax.jit(lambda p, l: metrics.confusion_matrix(p, l, 5))(jnp.asarray(pred), jnp.asarray(label))
  np.testing.assert_array_equal(np.asarray(on_device), expected)


def test_segmentation_scores():
  cm = np.array([[5, 1, 0, 0],
                 [2, 3, 0, 0],
                 [0, 0, 0, 0],   # class 2: absent from labels and predictions -> excluded
                 [0, 0, 0, 0]])  # class 3: absent from labels, never predicted either
  cm[0, 3] = 1                    # ... now class 3 is predicted once: IoU 0, counted
  s = metrics.segmentation_scores(cm)
  iou = [5 / (7 + 7 - 5), 3 / (5 + 4 - 3), None, 0.0]  # TP / (GT + pred - TP)
  assert s["per_class_iou"][2] is None
  np.testing.assert_allclose([s["per_class_iou"][i] for i in (0, 1, 3)], [iou[0], iou[1], 0.0])
  np.testing.assert_allclose(s["miou"], (iou[0] + iou[1] + 0.0) / 3)
  np.testing.assert_allclose(s["aacc"], 8 / 12)
  table = metrics.format_table(s, ["bg", "a", "b", "c"])
  assert "n/a" in table and "mIoU" in table


def test_miou_from_the_whole_split_not_the_mean_of_batches():
  rng = np.random.default_rng(4)
  preds = [rng.integers(0, 3, (4, 4)) for _ in range(3)]
  labels = [rng.integers(0, 3, (4, 4)) for _ in range(3)]
  total = sum(metrics.confusion_matrix(p, l, 3) for p, l in zip(preds, labels))
  whole = metrics.segmentation_scores(numpy_confusion(np.stack(preds), np.stack(labels), 3))
  assert metrics.segmentation_scores(total)["miou"] == pytest.approx(whole["miou"])
