"""The error a command raises when it cannot do what it was asked (exit code 2, one line on stderr).

Dependency-free, so the Lambdas' modules can raise it without importing Spark.
"""


class UsageError(ValueError):
    """Bad input, config or request: the message names the file, key or check; no trace is printed."""
