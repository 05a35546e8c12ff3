"""The exceptions shardwise raises on purpose.

`ConfigError` is a user error (bad input, a model or batch that cannot be split): the command
line prints its message as one line and exits with status 2. `WorkerError` is a rank that failed.
"""


class ShardwiseError(Exception):
    """Base class of every error shardwise raises on purpose."""


class ConfigError(ShardwiseError, ValueError):
    """Bad input from the user: the message is one line that says what to change."""


class WorkerError(ShardwiseError, RuntimeError):
    """A rank raised, died or timed out; the message names the rank and the cause."""


class TrainingDiverged(ShardwiseError, RuntimeError):
    """The loss stopped being finite; the message names the step and the likely cause."""
