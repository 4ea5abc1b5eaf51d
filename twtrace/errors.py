"""Errors that reach the user as one line on stderr, never a traceback."""


class UserError(Exception):
    """A problem the user can fix; the message is printed as-is."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
