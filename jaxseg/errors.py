"""Errors caused by the user's input (config, data, work dir). The command line prints
them as one line naming the thing at fault; anything else is a bug and keeps its
traceback."""


class UserError(Exception):
  pass


class ConfigError(UserError, KeyError):
  def __str__(self):  # KeyError would quote the message
    return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(UserError, FileNotFoundError):
  pass


class CheckpointMismatchError(UserError, ValueError):
  pass


class InputDataError(UserError, ValueError):
  """A record or image that cannot be used: unreadable, wrong shape, too large."""


class NoCheckpointError(UserError, FileNotFoundError):
  """A work dir with no checkpoint (or no config.json) where one is needed."""


class WorkdirError(UserError, OSError):
  """The work dir cannot be written (read-only, missing, disk full)."""


class NonFiniteError(UserError, FloatingPointError):
  """Training produced a non-finite loss or gradient (see config train.on_nonfinite)."""


class Preempted(Exception):
  """SIGTERM/SIGINT: training stopped after checkpointing; rerun to resume."""

  def __init__(self, step, signal_name, directory):
    super().__init__(f"stopped by {signal_name} at step {step}; checkpoint {directory}/{step} saved; "
                     "rerun the same command to resume")
    self.step = step


def first_line(error, limit=400) -> str:
  """The first line of an error's message, shortened in the middle (paths can be long)."""
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  return text if len(text) <= limit else text[:limit // 2] + " ... " + text[-limit // 2:]
