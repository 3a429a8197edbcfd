"""How a job attempt can fail."""


class TransientJobError(Exception):
    """Worth another attempt later (connection error, timeout, SMTP 4xx)."""


class PermanentJobError(Exception):
    """Retrying cannot help (SMTP 5xx); the job is dead until an admin retries it."""


class JobSkipped(Exception):
    """The effect must not happen (e.g. the address is not confirmed); the job ends `skipped`
    with this reason as its `last_error`."""
