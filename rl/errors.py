"""User-facing errors: one line naming the file, field or row, and the fix."""


class UserError(Exception):
    """A problem with the user's input (recipe, data, model path, flags), not a bug in entropy-rl.

    The CLI prints `error: <message>` on one line and exits with status 2, with no traceback.
    The message should name the file/field/row and say how to fix it.
    """


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message` (messages of library errors can span pages)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
