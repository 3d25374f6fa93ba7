"""Task families: what training, evaluation, `jaxseg.load` and `--mode predict` need
from a kind of task, so that a new task joins in its own module.

A family is a module with a `Family` class; `config.family` names it: "semantic" (the
modules of this package), or a dotted module path for a family defined elsewhere
("my_project.counting"). `Family(config)` provides:

  build_model(train)              the flax module for training (train=True) or evaluation
  example(train)                  one record's batch entries as numpy arrays (shapes,
                                  dtypes): stacked for init and eval_shape; as filler for
                                  the padding entries of the last eval batch (their
                                  targets must count for nothing)
  init(model, key, batch)         the model variables (params, optional batch_stats)
  apply(model, variables, batch, train, **apply_kwargs)   the model's outputs
  train_transform(record, rng, where) / eval_transform(record, where)
                                  a dataset record -> that record's batch dict (numpy);
                                  check_train_input() checks their settings once
  loss(outputs, batch, rng)       -> (total, {term: value}); jittable
  predict(model, variables, batch) -> dict of outputs; jittable
  evaluators()                    {name: Evaluator} (jaxseg.evaluate) that score `predict`
  report(scores, step)            the text printed after an evaluation
  log_evaluation(tb, step, scores, predict, eval_source)  TensorBoard entries of an
                                  evaluation (`predict(batch)`: the outputs of a batch)
  predictor(model, variables, step, mesh)  the object `jaxseg.load` returns
  write_predictions(predictor, input_dir, output_dir)   --mode predict
  describe()                      the model's one-line name for the start-up line

`Base` holds the parts most families share (init, apply, the dataset of
config.dataset).

A training transform may report what it did to a record without failing in entries
named `count_<what>` (an int per record; jaxseg.data.instances: count_instances_dropped,
instances beyond input.max_instances): train.py takes them out of each batch before
the step (`take_counts`) and logs their running totals as `<what>` in train_log.jsonl.
"""
from __future__ import annotations

import importlib

import jax
import numpy as np

from jaxseg.errors import ConfigError

DEFAULT = "semantic"


def module_name(config):
  """The module of `config.family` (work dirs written before the key: semantic)."""
  name = config.get("family", DEFAULT) or DEFAULT
  return name if "." in name else f"jaxseg.families.{name}"


def get(config):
  """The family of `config`, bound to it."""
  name = module_name(config)
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name and name.startswith(e.name):
      raise ConfigError(f"config key family: no module '{name}' (a family is 'semantic' or the "
                        "dotted path of a module with a Family class)") from e
    raise
  if not hasattr(module, "Family"):
    raise ConfigError(f"config key family: module '{name}' has no Family class")
  return module.Family(config)


class Base:
  """Defaults shared by the families: init and apply of a flax module that takes the
  batch dict, and the TFDS dataset of config.dataset."""

  def __init__(self, config):
    self.config = config
    self._builder = None

  @property
  def builder(self):
    """The TFDS builder of config.dataset (prepared on first use where it can be)."""
    if self._builder is None:
      from jaxseg.data import datasets
      self._builder = datasets.load(self.config.dataset.name, self.config.dataset.data_dir)
    return self._builder

  def __getstate__(self):  # transforms travel to grain's worker processes; the builder stays
    return {**self.__dict__, "_builder": None}

  def check_train_input(self):
    """Raises ConfigError for training input settings the transforms cannot run."""

  def init(self, model, key, batch):
    return model.init({"params": key, "dropout": key}, batch, train=True)

  def apply(self, model, variables, batch, train, **kwargs):
    return model.apply(variables, batch, train=train, **kwargs)

  def log_evaluation(self, tb, step, scores, predict, eval_source):
    tb.scalars(step, {k: v for k, v in scores.items() if isinstance(v, (int, float))}, "eval/")

  def describe(self):
    return type(self).__module__


def stack(examples):
  """A batch dict from a list of per-record dicts."""
  return jax.tree.map(lambda *x: np.stack(x), *examples)


COUNT_PREFIX = "count_"


def take_counts(batch):
  """{<what>: sum} of the `count_<what>` entries of a host-local batch, which are
  removed from it (they are reports, not model inputs)."""
  names = [k for k in batch if k.startswith(COUNT_PREFIX)]
  return {k[len(COUNT_PREFIX):]: int(np.sum(batch.pop(k))) for k in names}
