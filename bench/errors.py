"""User-facing errors: one class whose message is printed as a single line by the CLI."""


class BenchError(Exception):
    """An error caused by the user's input (name, override, file); the CLI exits 2 on it."""

    exit_code = 2


class CellFailed(Exception):
    """A grid cell failed while running (for example a non-finite loss); exit code 1."""

    exit_code = 1
