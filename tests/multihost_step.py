"""One training step of quickstart:tiny on a fixed random batch, in this process or as
one of several (`OUT COORDINATOR NUM_PROCESSES PROCESS_ID`): each process feeds its
own rows of the global batch, as training does. Process 0 writes the step's loss,
gradients and new BN statistics to OUT (.npz).

  python tests/multihost_step.py OUT [MODEL_AXIS [COORDINATOR NUM_PROCESSES PROCESS_ID]]

The batch is per-pixel noise: flat image regions give many equal values at a max-pool
window or a ReLU's kink, where rounding that differs between device layouts sends the
gradient another way (tests/test_multihost.py)."""
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

out, rest = sys.argv[1], sys.argv[2:]
model_axis = int(rest[0]) if rest else 1
if len(rest) > 1:
  jax.distributed.initialize(rest[1], int(rest[2]), int(rest[3]))

from jax.experimental import multihost_utils  # noqa: E402

from jaxseg import sharding, train  # noqa: E402
from jaxseg.models.segmentor import build_model  # noqa: E402
from tests.conftest import load_config  # noqa: E402

config = load_config("quickstart", "tiny")
mesh = sharding.make_mesh(model=model_axis)
model = build_model(config)
init_fn, abstract_state, tx, schedule = train.state_factory(config, model)
state = jax.jit(init_fn, out_shardings=sharding.state_shardings(abstract_state, mesh))(jax.random.key(0))

rng = np.random.default_rng(0)
b, (h, w) = config.train.batch_size, config.input.crop_size
batch = {"image": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
         "label": rng.integers(0, config.dataset.num_classes, (b, h, w)).astype(np.int32)}
rows = slice(jax.process_index() * b // jax.process_count(), (jax.process_index() + 1) * b // jax.process_count())
batch = sharding.global_batch({k: v[rows] for k, v in batch.items()}, sharding.data_sharding(mesh))

grad_fn = jax.value_and_grad(train.make_loss_fn(config, model), has_aux=True)
(loss, (terms, batch_stats)), grads = jax.jit(grad_fn)(state.params, state.batch_stats, batch,
                                                      jax.random.key(config.seed))
results = multihost_utils.process_allgather({"loss": loss, "grads": grads, "batch_stats": batch_stats},
                                            tiled=True)
if jax.process_index() == 0:
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(results)[0]}
  np.savez(out, **flat)
