"""Why a connection failed, in the words the logs use."""

from __future__ import annotations

import trio


def reason(exc: BaseException) -> str:
    """The innermost reason: trio wraps the ``OSError`` that says what
    happened (``Connection refused``...), in a group when it tried several
    addresses."""
    while exc.__cause__ is not None and isinstance(exc, (OSError, trio.BrokenResourceError)):
        exc = exc.__cause__
    group = getattr(exc, "exceptions", None)  # an ExceptionGroup (3.10: the backport's)
    if group:
        exc = group[-1]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
