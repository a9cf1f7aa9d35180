"""The one exception type users see: the CLI prints it as a single line and exits nonzero."""


class HwgenError(Exception):
    """A user-facing error: bad input, unsupported model, missing tool. Its message names the culprit."""
