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
