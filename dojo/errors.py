"""The failure a person at the command line can act on: `dojo` prints its message as one line, no traceback."""


class DojoError(RuntimeError):
    pass
