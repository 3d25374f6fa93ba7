"""A semantic family whose training transform also builds instance targets from the
`shapes` label (one segment per class present, at most 2 instances): its
count_instances_dropped entries reach train_log.jsonl through the family-neutral
counters (jaxseg.families.take_counts). Its model is one 1x1 convolution, so that
the training run the test makes compiles in seconds. Used by tests/test_instances.py."""
import flax.linen as nn
import numpy as np

from jaxseg.data import instances
from jaxseg.families import semantic

MAX_INSTANCES = 2


def dropped(out, num_classes):
  """instances.targets of the crop's label map, each class one segment (id = class + 1)."""
  label = out["label"]
  index = np.where(label == 255, 0, label.astype(np.uint16) + 1)
  segments = {"id": np.arange(1, num_classes + 1), "category": np.arange(num_classes),
              "iscrowd": np.zeros(num_classes, np.int64)}
  return instances.targets(index, segments, np.ones(num_classes, bool), MAX_INSTANCES, which="all")


class PixelClassifier(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, image, train=False, batch=None):
    return {"seg": nn.Conv(self.num_classes, (1, 1))(image)}


class Family(semantic.Family):
  def build_model(self, train):
    return PixelClassifier(self.config.dataset.num_classes)

  def train_transform(self, record, rng, where="record"):
    out = super().train_transform(record, rng, where)
    out["count_instances_dropped"] = dropped(out, self.config.dataset.num_classes)["count_instances_dropped"]
    return out
