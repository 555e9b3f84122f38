"""One exception type for every user-facing failure.

The CLI prints `error: <message>` on one line and exits non-zero; anything else is a bug and gets
a traceback.
"""


class VQBenchError(Exception):
    """A failure caused by input, configuration or environment that the user can fix."""


class MissingWeightsError(VQBenchError):
    """A weights file or the package that carries it is not installed."""


def error_text(e: BaseException) -> str:
    """``ClassName: first line of the message``, for one-line errors."""
    text = getattr(e, "strerror", None) or str(e)
    first = text.splitlines()[0] if text else ""
    return f"{e.__class__.__name__}: {first}" if first else e.__class__.__name__
