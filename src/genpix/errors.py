"""The one exception type every user-facing problem is reported with.

The CLI and the server print ``str(error)`` as one line (or a 4xx JSON body); anything else that
escapes is a bug and keeps its traceback.
"""


class GenpixError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""
