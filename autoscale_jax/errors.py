"""The one base class of every error whose message is written for users.

An error that derives from :class:`UserError` means "the input is wrong, and
the message says how to fix it": ``main.py`` prints its message as one
``error: ...`` line and exits with status 2. Every other exception is a bug
and keeps its traceback.
"""


class UserError(Exception):
  """A failure caused by the user's input; the message names it and the fix."""
