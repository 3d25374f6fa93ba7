import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import checkpoint
from jaxseg.errors import CheckpointMismatchError
from tests.conftest import load_config


def test_keeps_the_latest_k_and_the_best(tmp_path):
  mngr = checkpoint.manager(str(tmp_path), keep=2)
  tree = {"w": jnp.arange(4.0)}
  mious = {2: 0.9, 4: 0.5}
  for step in range(1, 6):
    checkpoint.save(mngr, step, jax.tree.map(lambda x: x + step, tree), {"next_index": step},
                    {"miou": mious[step]} if step in mious else None)
  mngr.wait_until_finished()
  assert sorted(int(p) for p in os.listdir(tmp_path / "checkpoints")) == [2, 4, 5]
  state, data = checkpoint.restore(mngr, 2, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree))
  np.testing.assert_array_equal(state["w"], np.arange(4.0) + 2)
  assert data == {"next_index": 2}
  mngr.close()


def test_restoring_into_another_shape_is_a_clear_error(tmp_path):
  mngr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mngr, 1, {"w": jnp.zeros((3, 3))}, {"next_index": 1})
  mngr.wait_until_finished()
  with pytest.raises(CheckpointMismatchError, match="does not match the model"):
    checkpoint.restore(mngr, 1, {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32)})
  mngr.close()


def test_check_same_model(tmp_path):
  config = load_config("quickstart", "tiny")
  (tmp_path / "config.json").write_text(config.to_json())
  checkpoint.check_same_model(str(tmp_path), config)
  config.model.eval_output_stride = 16  # does not change what the checkpoint holds
  config.train.steps = 99
  checkpoint.check_same_model(str(tmp_path), config)
  config.dataset.num_classes = 7
  with pytest.raises(CheckpointMismatchError, match="dataset.num_classes: 6 there, 7 now"):
    checkpoint.check_same_model(str(tmp_path), config)


def test_resume_compares_only_the_components_in_use(tmp_path):
  config = load_config("quickstart", "tiny")  # the ASPP head, no neck
  saved = json.loads(config.to_json())
  saved["model"]["psp_bins"] = [1, 2]  # another head's default changed since the run
  saved["model"]["jpu_channels"] = 7
  (tmp_path / "config.json").write_text(json.dumps(saved))
  checkpoint.check_same_model(str(tmp_path), config)
  config.model.aspp_rates = (3, 6, 9)  # a key of the head in use
  with pytest.raises(CheckpointMismatchError, match="model.aspp_rates"):
    checkpoint.check_same_model(str(tmp_path), config)
  config.model.aspp_rates = tuple(saved["model"]["aspp_rates"])
  config.model.decode_head = "psp"
  with pytest.raises(CheckpointMismatchError, match="model.decode_head"):
    checkpoint.check_same_model(str(tmp_path), config)


def test_keys_added_to_the_config_since_a_run_take_their_defaults(tmp_path):
  config = load_config("quickstart", "tiny")
  saved = json.loads(config.to_json())
  del saved["model"]["neck"]  # a work dir written before `model.neck` existed
  (tmp_path / "config.json").write_text(json.dumps(saved))
  checkpoint.check_same_model(str(tmp_path), config)
  config.model.neck = "jpu"
  with pytest.raises(CheckpointMismatchError, match="model.neck"):
    checkpoint.check_same_model(str(tmp_path), config)
