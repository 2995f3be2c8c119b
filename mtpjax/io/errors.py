"""Errors raised by file readers: they carry the file name and line number."""

from __future__ import annotations


class FileFormatError(ValueError):
    """Malformed input file. ``str(err)`` reads ``path:line: message``."""

    def __init__(self, path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
