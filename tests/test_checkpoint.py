import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import checkpoint
from jaxseg.config import head, neck
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


def test_the_detectors_inference_keys_do_not_make_another_model(tmp_path):
  config = load_config("panet_coco", "tiny")
  (tmp_path / "config.json").write_text(config.to_json())
  config.model.head.update(dict(detections=32, score_threshold=0.0, rpn_post_nms_top_n_test=128))
  checkpoint.check_same_model(str(tmp_path), config)  # an eval with more detections
  config.model.head.mask_channels = 32
  with pytest.raises(CheckpointMismatchError, match="model.head.mask_channels: 64 there, 32 now"):
    checkpoint.check_same_model(str(tmp_path), config)


def test_resume_compares_only_the_components_in_use(tmp_path, monkeypatch):
  from jaxseg.models.heads import psp
  from jaxseg.models.necks import jpu
  config = load_config("quickstart", "tiny")  # the ASPP head, no neck
  (tmp_path / "config.json").write_text(config.to_json())
  # Defaults of another head and neck changed since the run: the run still resumes.
  monkeypatch.setitem(psp.CONFIG, "bins", (1, 2))
  monkeypatch.setitem(jpu.CONFIG, "channels", 7)
  checkpoint.check_same_model(str(tmp_path), config)
  config.model.head.rates = (3, 6, 9)  # a key of the head in use
  with pytest.raises(CheckpointMismatchError, match="model.head.rates"):
    checkpoint.check_same_model(str(tmp_path), config)
  config.model.head = head("psp")
  with pytest.raises(CheckpointMismatchError, match="model.head.bins: None there, .1, 2. now"):
    checkpoint.check_same_model(str(tmp_path), config)
  config = load_config("quickstart", "tiny")
  config.model.aux_heads.aux.dilation = 2  # an auxiliary head's key
  with pytest.raises(CheckpointMismatchError, match="model.aux_heads.aux.dilation: 1 there, 2 now"):
    checkpoint.check_same_model(str(tmp_path), config)
  config.model.aux_heads = {}
  with pytest.raises(CheckpointMismatchError, match="model.aux_heads.aux"):
    checkpoint.check_same_model(str(tmp_path), config)


def test_keys_added_to_the_config_since_a_run_take_their_defaults(tmp_path):
  config = load_config("quickstart", "tiny")
  saved = json.loads(config.to_json())
  del saved["model"]["neck"]  # a work dir written before `model.neck` existed
  del saved["model"]["head"]["project_kernel"]  # or before a key of its head
  (tmp_path / "config.json").write_text(json.dumps(saved))
  checkpoint.check_same_model(str(tmp_path), config)
  config.model.neck = neck("jpu")
  with pytest.raises(CheckpointMismatchError, match="model.neck"):
    checkpoint.check_same_model(str(tmp_path), config)
