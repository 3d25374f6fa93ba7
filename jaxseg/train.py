"""Training, one linear story: mesh -> data -> abstract state -> shardings -> jitted
init or restore -> jitted step with donated state -> loop (log, evaluate, checkpoint).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import checkpoint, families, sharding
from jaxseg import tensorboard
from jaxseg.data import datasets
from jaxseg.errors import ConfigError, NonFiniteError, Preempted, WorkdirError, first_line
from jaxseg.evaluate import Evaluation
from jaxseg.models.fold_bn import inference_variables
from jaxseg.models.frozen_bn import frozen_batch_norm
from jaxseg.replicas import Replicas
from jaxseg.state import TrainState, state_factory, variables  # noqa: F401  (TrainState: for importers)


def make_loss_fn(config, model, family=None):
  """loss_fn(params, batch_stats, batch, dropout_key) -> (loss, (terms, new batch_stats)):
  the family's forward pass in training mode and its loss."""
  family = family or families.get(config)

  def loss_fn(params, batch_stats, batch, dropout_key):
    with frozen_batch_norm(config.train.frozen_bn, config.train.frozen_bn_affine):
      outputs, updates = family.apply(model, {"params": params, "batch_stats": batch_stats}, batch, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": dropout_key})
    loss, terms = family.loss(outputs, batch, jax.random.fold_in(dropout_key, 1))
    return loss, (terms, updates.get("batch_stats", {}))

  return loss_fn


def make_train_step(config, model, tx, schedule, family=None):
  base_key = jax.random.key(config.seed)
  grad_fn = jax.value_and_grad(make_loss_fn(config, model, family), has_aux=True)

  def train_step(state, batch, replica=None):
    dropout_key = jax.random.fold_in(base_key, state.step)
    if replica is not None:  # asynchronous replicas (jaxseg.replicas) draw their own masks
      dropout_key = jax.random.fold_in(dropout_key, replica)
    (loss, (terms, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch, dropout_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient leaves params, BN statistics and optimizer state
    # as they were; the step counter (hence data and schedule) still advances.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=jax.tree.map(keep, optax.apply_updates(state.params, updates), state.params),
        batch_stats=jax.tree.map(keep, batch_stats, state.batch_stats),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state))
    logs = {"loss": loss, "lr": schedule(state.step), "grad_norm": grad_norm, "finite": finite,
            **{f"loss_{k}": v for k, v in terms.items()}}
    return new_state, logs

  return train_step


def make_predict(config, eval_model, family=None):
  """predict(variables, batch) -> the family's outputs (semantic: {"pred": class ids})."""
  family = family or families.get(config)
  return lambda variables, batch: family.predict(eval_model, variables, batch)


def _append_jsonl(path, record):
  try:
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")
  except OSError as e:  # a full disk must not end the run: checkpoints report it
    print(f"WARNING: cannot append to {path}: {e.strerror or e}", flush=True)


def all_hosts(counts):
  """The sums over all processes of each host's `counts` ({name: int}; every host has
  the same names, its transforms being the same)."""
  if jax.process_count() == 1 or not counts:
    return dict(counts)
  from jax.experimental import multihost_utils
  names = sorted(counts)
  total = multihost_utils.process_allgather(np.array([counts[k] for k in names], np.int32)).sum(0)
  return dict(zip(names, (int(t) for t in total)))


def _duration(seconds):
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class NonFiniteGuard:
  """Applies config train.on_nonfinite to each step's `finite` flag: "stop" raises at
  the first non-finite step, "skip" (the step already left the state unchanged)
  raises after `max_consecutive_skips` in a row. Either way no checkpoint is written
  after the fault, so the last good one stays."""

  def __init__(self, c):
    if c.on_nonfinite not in ("skip", "stop"):
      raise ConfigError(f"config key train.on_nonfinite must be 'skip' or 'stop', got '{c.on_nonfinite}'")
    self.policy, self.limit = c.on_nonfinite, c.max_consecutive_skips
    self.consecutive = self.skipped = 0

  def check(self, step, logs):
    if bool(logs["finite"]):
      self.consecutive = 0
      return
    self.consecutive += 1
    self.skipped += 1
    terms = [k[5:] for k, v in logs.items() if k.startswith("loss_") and not jnp.isfinite(v)]
    what = f"loss term(s) {', '.join(terms)}" if terms else "gradients (the loss was finite)"
    if self.policy == "stop":
      raise NonFiniteError(f"non-finite {what} at step {step} (train.on_nonfinite='stop')")
    print(f"step {step}: non-finite {what}; update skipped ({self.consecutive} in a row)", flush=True)
    if self.consecutive >= self.limit:
      raise NonFiniteError(f"{self.consecutive} consecutive non-finite steps ending at step {step} "
                           f"({what}); train.max_consecutive_skips = {self.limit}")


class StopSignals:
  """Turns the first SIGTERM/SIGINT into a flag the loop checks after each step (a
  second one interrupts at once)."""

  def __init__(self):
    self.received, self.previous = None, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self.previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)

  def __exit__(self, *exc):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def check_writable(workdir):
  """Creates the work dir and writes a file there, or raises WorkdirError."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{jax.process_index()}")  # hosts may share the dir
    with open(probe, "w") as f:
      f.write("x" * 4096)
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"work dir {workdir} is not writable: {e.strerror or e}") from e


def train_and_evaluate(config, workdir, stop_after=None, restore=None):
  """Trains to config.train.steps, resuming from the work dir's latest checkpoint.

  `stop_after`: leave the loop after this step, as an interrupted run would, with
  its checkpoints written (the schedule still runs to config.train.steps).
  `restore`: start from this checkpoint directory (WORKDIR/checkpoints/STEP)
  instead of the work dir's latest.
  """
  from jaxseg.data import pipeline  # grain: the benchmark and flops tools import this module without it
  check_writable(workdir)
  checkpoint.check_same_model(workdir, config)

  # Mesh: every device of every host, train.model_axis of them on the `model` axis.
  mesh = sharding.make_mesh(model=config.train.model_axis)
  data_sh, repl = sharding.data_sharding(mesh), sharding.replicated(mesh)
  if config.train.batch_size % mesh.shape["data"]:
    raise ConfigError(f"config train.batch_size {config.train.batch_size} is not divisible by "
                     f"the {mesh.shape['data']} devices of the mesh's data axis")
  if config.train.model_axis > 1 and config.train.replicas > 1:
    raise ConfigError("config train.model_axis > 1 and train.replicas > 1 cannot be combined yet")

  # Task family (config.family), data.
  family = families.get(config)
  metric = config.train.get("best_metric", "miou")  # picks the best checkpoint and the FINAL line
  builder = family.builder
  train_source = pipeline.CheckedSource(datasets.source(builder, config.dataset.train_split),
                                       config.dataset.train_split, config.input.skip_bad_records)
  train_data = pipeline.train_dataset(config, train_source, jax.process_index(), jax.process_count(), family)
  eval_source = pipeline.CheckedSource(datasets.source(builder, config.dataset.eval_split),
                                       config.dataset.eval_split)

  # Model and abstract state -> shardings (state replicated or split over `model`, batch on `data`).
  model, eval_model = family.build_model(train=True), family.build_model(train=False)
  init_fn, abstract_state, tx, schedule = state_factory(config, model, family)
  state_sh = sharding.state_shardings(abstract_state, mesh)

  # Restore the latest checkpoint of this work dir, or initialise.
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints, metric=metric)
  iterator = pipeline.train_iterator(train_data, config)
  source_mngr, latest = checkpoint.resume_point(mngr, restore)
  if latest is not None:
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract_state, state_sh)
    state, data_state = checkpoint.restore(source_mngr, latest, abstract)
    if data_state:  # a converted checkpoint (python -m jaxseg.convert) has no data position
      iterator.set_state(data_state)
    print(f"Resumed from {source_mngr.directory}/{latest}", flush=True)
  else:
    state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(config.seed))
    if config.model.get("init_from"):  # pretrained weights (python -m jaxseg.convert) into the fresh state
      from jaxseg.convert.init_from import init_from
      state = init_from(state, config, workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  model_axis = f" ({mesh.shape['model']} on the model axis)" if mesh.shape["model"] > 1 else ""
  print(f"{family.describe()}: {num_params / 1e6:.2f}M "
        f"params, {jax.device_count()} devices{model_axis}, global batch {config.train.batch_size}", flush=True)
  tb = tensorboard.Writer(os.path.join(workdir, "tensorboard"), enabled=jax.process_index() == 0)

  # Jitted step (donated state) and evaluation.
  train_step = jax.jit(make_train_step(config, model, tx, schedule, family),
                       in_shardings=(state_sh, data_sh), out_shardings=(state_sh, repl),
                       donate_argnums=0)
  replicas = None
  if config.train.replicas > 1:  # asynchronous replicas: `state` holds R stacked copies
    replicas = Replicas(config, make_train_step(config, model, tx, schedule, family))
  predict = make_predict(config, eval_model, family)
  evaluators = family.evaluators()
  evaluations = {}  # one compiled evaluation per set of evaluators due together
  to_device = lambda batch: sharding.global_batch(batch, data_sh)
  predict_batch = jax.jit(predict, out_shardings=repl)

  def due(step):
    """The evaluators whose cadence (config.evals.*.every) falls on `step`."""
    every = lambda name: config.evals[name].get("every", 0) or config.train.eval_every
    return tuple(n for n in evaluators if every(n) > 0 and (step % every(n) == 0 or step == config.train.steps))

  def run_eval(step, state, names):
    """Runs the evaluators `names`; the train.best_metric score, or None without it."""
    if names not in evaluations:
      evaluations[names] = Evaluation(predict, {n: evaluators[n] for n in names}, repl)
    batches = pipeline.eval_batches(config, eval_source, sharding.eval_batch_size(config),
                                    jax.process_index(), jax.process_count(), family)
    folded = inference_variables(variables(state))  # BN folded, as --mode eval and jaxseg.load run
    scores, _ = evaluations[names](folded, batches, to_device)
    print(f"Evaluation on '{config.dataset.eval_split}' ({scores['eval_seconds']:.1f}s)")
    print(family.report(scores, step), flush=True)
    if jax.process_index() == 0:
      _append_jsonl(os.path.join(workdir, "metrics.jsonl"), {"step": step, **scores, "evaluators": list(names)})
    family.log_evaluation(tb, step, scores, lambda batch: predict_batch(folded, batch), eval_source)
    if metric not in scores and set(names) == set(evaluators):
      raise ConfigError(f"config key train.best_metric: no evaluator of config.evals gives '{metric}' "
                        f"(they give: {', '.join(sorted(scores))})")
    return scores.get(metric)

  def save(step, state, score=None):
    """An async checkpoint; a failed write (disk full, ...) is reported and retried at
    the next checkpoint, the state in memory and the earlier checkpoints untouched."""
    try:
      checkpoint.save(mngr, step, state, iterator.get_state(), None if score is None else {metric: score})
      return True
    except Exception as e:  # orbax surfaces a failed earlier async write here too
      print(f"WARNING: a checkpoint write to {mngr.directory} failed at step {step} "
            f"({first_line(e)}); earlier checkpoints are intact, the next checkpoint retries",
            flush=True)
      return False

  def finish_saves():
    """Waits for the async saves; False (with a warning) if the last one failed."""
    try:
      mngr.wait_until_finished()
      return True
    except Exception as e:
      print(f"WARNING: writing a checkpoint to {mngr.directory} failed: {first_line(e)}", flush=True)
      return False
    finally:
      mngr.close()

  # Loop.
  c = config.train
  guard = NonFiniteGuard(c)
  step = int(state.step)
  if replicas:
    state = replicas.stack(state)
  if step >= c.steps:
    print(f"Already trained to step {step} (train.steps = {c.steps}); nothing to do.")
  # Throughput since the last log line, leaving out time spent evaluating and saving.
  start_step, t_log, images, paused = step, time.time(), 0, 0.0
  pending = None  # (step, logs) whose finiteness is checked once the next step is queued
  saved_ok = True
  counts = {}  # running totals of the transforms' count_* entries (families.take_counts), this run
  with StopSignals() as signals:
    while step < c.steps:
      batch = next(iterator)
      for name, n in families.take_counts(batch).items():
        counts[name] = counts.get(name, 0) + n
      if replicas:
        state, logs = replicas.step(state, batch, step + 1)
      else:
        state, logs = train_step(state, to_device(batch))
      step += 1
      images += c.batch_size
      if pending:
        guard.check(*pending)
      pending = (step, logs)
      if step == start_step + 1:  # leave compilation out of the throughput
        jax.block_until_ready(state)
        t_log, images, paused = time.time(), 0, 0.0
      is_log = step % c.log_every == 0 or step == c.steps
      eval_now = due(step)
      is_eval = bool(eval_now)
      is_ckpt = step % c.ckpt_every == 0 or step == c.steps or is_eval
      if is_log or is_ckpt or signals.received or step == stop_after:
        guard.check(*pending)  # never log, evaluate or save past a fault
        pending = None
      if is_log:
        logs = {k: float(v) for k, v in jax.device_get(logs).items() if k != "finite"}
        rate = images / max(time.time() - t_log - paused, 1e-9) if images else 0.0
        eta = (c.steps - step) * c.batch_size / rate if rate else 0.0
        print(f"[{step:>{len(str(c.steps))}}/{c.steps}] {100 * step / c.steps:3.0f}%  "
              f"loss {logs['loss']:.4f}  lr {logs['lr']:.2e}  {rate:6.1f} img/s  "
              f"ETA {_duration(eta)}", flush=True)
        tb.scalars(step, {**logs, "images_per_sec": rate}, "train/")
        totals = all_hosts(counts)
        if jax.process_index() == 0:
          _append_jsonl(os.path.join(workdir, "train_log.jsonl"),
                        {"step": step, **logs, "images_per_sec": rate, "skipped_steps": guard.skipped,
                         "skipped_records": len(train_source.skipped), **totals})
        t_log, images, paused = time.time(), 0, 0.0
      single = state
      if replicas and (is_ckpt or signals.received):
        single, state = replicas.synchronise(state, state_sh)  # the one state to evaluate and save
      if is_ckpt:
        t_pause = time.time()
        score = run_eval(step, single, eval_now) if is_eval else None
        saved_ok = save(step, single, score)
        paused += time.time() - t_pause
      if signals.received and not is_ckpt:
        saved_ok = save(step, single)
      if signals.received or step == stop_after:
        break
  tb.close()
  if not finish_saves() or not saved_ok:
    raise WorkdirError(f"the last checkpoint (step {step}) could not be written to {mngr.directory}")
  if signals.received:
    raise Preempted(step, signals.received, mngr.directory)
  best = best_evaluation(workdir, metric)
  if best and jax.process_index() == 0:
    where = best["checkpoint"] if os.path.isdir(best["checkpoint"]) else "its checkpoint was not kept"
    print(f"FINAL best {metric_name(metric)} {best[metric]:.4f} at step {best['step']}: {where}", flush=True)
  return replicas.synchronise(state, state_sh)[0] if replicas else state


def metric_name(metric):
  return {"miou": "mIoU"}.get(metric, metric)


def best_evaluation(workdir, metric="miou"):
  """{step, <metric>, checkpoint} of the training evaluation with the highest `metric`
  in WORKDIR/metrics.jsonl (over all runs in the work dir, resumed ones included; rows
  of --mode eval left out), or None before any evaluation."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    evals = [json.loads(line) for line in f if line.strip()]
  evals = [e for e in evals if e.get("mode", "train") == "train" and isinstance(e.get(metric), (int, float))
           and e[metric] == e[metric]]  # not NaN
  if not evals:
    return None
  best = max(evals, key=lambda e: e[metric])
  return {"step": best["step"], metric: best[metric],
          "checkpoint": os.path.join(os.path.abspath(workdir), "checkpoints", str(best["step"]))}
