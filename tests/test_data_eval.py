import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxseg import sharding
from jaxseg.data import datasets, pipeline, transforms
from jaxseg.data.builders.shapes import make_example
from jaxseg.evaluate import SegEvaluator, slide_logits, window_starts
from tests.conftest import load_config


def test_shapes_examples_are_deterministic_and_varied():
  a, b = make_example("train", 7), make_example("train", 7)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  labels = np.concatenate([make_example("train", i)[1].ravel() for i in range(40)])
  present = set(np.unique(labels).tolist())
  assert {0, 1, 2, 3, 4, 5, 255} <= present
  assert 0.005 < np.mean(labels == 255) < 0.2  # a thin ignore band, not a flood


def test_random_crop_pads_with_ignore_and_respects_cat_max_ratio():
  rng = np.random.default_rng(0)
  image = np.full((10, 12, 3), 7, np.uint8)
  label = np.zeros((10, 12), np.uint8)
  img, lab = transforms.random_crop(image, label, rng, (16, 16))
  assert img.shape == (16, 16, 3) and lab.shape == (16, 16)
  assert (lab == 255).sum() == 16 * 16 - 10 * 12 and (img == 0).sum() == 3 * (16 * 16 - 10 * 12)
  # A label where most crops are pure class 0; cat_max_ratio forces mixed crops.
  label = np.zeros((100, 100), np.uint8)
  label[:, 80:] = 1
  hits = [np.unique(transforms.random_crop(image[:1, :1].repeat(100, 0).repeat(100, 1), label,
                                           np.random.default_rng(s), (30, 30), 0.75)[1]).size
          for s in range(20)]
  assert np.mean(np.array(hits) == 2) > 0.8


def test_train_stream_is_a_function_of_seed_and_position(data_dir):
  config = load_config("quickstart", "tiny")
  source = datasets.source(datasets.load("shapes", data_dir), "train")
  ds1 = pipeline.train_dataset(config, source)
  ds2 = pipeline.train_dataset(config, source)
  np.testing.assert_array_equal(ds1[3]["image"], ds2[3]["image"])
  np.testing.assert_array_equal(ds1[3]["label"], ds2[3]["label"])
  assert not np.array_equal(ds1[3]["image"], ds1[4]["image"])
  batch = ds1[0]
  assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (8, 64, 64)
  # The iterator resumes from its saved state.
  it = pipeline.train_iterator(ds1, config)
  next(it)
  state = it.get_state()
  expected = next(it)
  it2 = pipeline.train_iterator(ds2, config)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["image"], expected["image"])
  # Host p holds the p-th contiguous block of each global batch, augmented as with one
  # host: the global batch does not depend on the number of hosts.
  whole = pipeline.train_dataset(config, source)[1]
  halves = [pipeline.train_dataset(config, source, p, 2)[1] for p in range(2)]
  assert halves[0]["image"].shape[0] == config.train.batch_size // 2
  for key in ("image", "label"):
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_eval_padding_is_never_counted(data_dir):
  config = load_config("quickstart", "tiny")
  source = datasets.source(datasets.load("shapes", data_dir), "val")
  batches = list(pipeline.eval_batches(config, source, 64))  # 200 images -> 4 batches, last padded
  assert len(batches) == 4 and all(b["image"].shape == (64, 160, 160, 3) for b in batches)
  labelled = sum(int(((r["label"][..., 0]) != 255).sum()) for r in (source[i] for i in range(len(source))))
  mesh = sharding.make_mesh()
  evaluator = SegEvaluator(lambda v, batch: jnp.zeros(batch["image"].shape[:3], jnp.int32), 6, 255,
                           sharding.data_sharding(mesh), sharding.replicated(mesh))
  scores, cm = evaluator({}, iter(batches), lambda b: sharding.global_batch(b, sharding.data_sharding(mesh)))
  assert cm.sum() == labelled  # padded pixels and padded batch entries contribute nothing
  assert cm[:, 1:].sum() == 0


def test_eval_image_larger_than_eval_size_is_a_clear_error(data_dir):
  config = load_config("quickstart", "tiny")
  config.input.eval_size = (100, 100)
  source = datasets.source(datasets.load("shapes", data_dir), "val")
  with pytest.raises(ValueError, match=r"split 'val' record 0 .*larger than config input.eval_size"):
    next(pipeline.eval_batches(config, source, 4))


def test_window_starts_cover_the_image():
  assert window_starts(10, 10, 5) == [0]
  assert window_starts(20, 8, 6) == [0, 6, 12]
  for size, crop, stride in [(97, 33, 20), (64, 32, 32), (50, 49, 10)]:
    starts = window_starts(size, crop, stride)
    covered = np.zeros(size, bool)
    for s in starts:
      covered[s:s + crop] = True
    assert covered.all() and starts[-1] + crop == size


def test_slide_inference_of_a_pointwise_model_equals_whole_image():
  # A per-pixel model gives the same logits whichever windows cover a pixel.
  images = jax.random.normal(jax.random.key(0), (2, 23, 31, 3))
  forward = lambda x: jnp.concatenate([x, -x], -1)
  out = slide_logits(forward, images, (10, 12), (7, 5), 6)
  np.testing.assert_allclose(out, forward(images), rtol=1e-6, atol=1e-6)


def test_multi_scale_flip_averages_probabilities():
  from jaxseg.evaluate import predict_scores

  class Pointwise:  # a model whose "seg" logits are a per-pixel function of the image
    def apply(self, variables, x, train, batch):
      return {"seg": jnp.concatenate([x, -x], -1)}

  config = ml_collections.ConfigDict({
      "dataset": {"num_classes": 6, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
      "model": {"align_corners": False},
      "eval": {"mode": "whole", "scales": (1.0,), "flip": True, "crop_size": (8, 8), "stride": (4, 4)}})
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3)), jnp.uint8)
  x = images.astype(jnp.float32)
  probs = predict_scores(Pointwise(), {}, {"image": images}, config)
  # flip of a pointwise model, flipped back, is the same view: the average is its softmax
  np.testing.assert_allclose(probs, jax.nn.softmax(jnp.concatenate([x, -x], -1)), rtol=1e-5)
