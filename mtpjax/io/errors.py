"""Errors raised by file readers: they carry the file name and line number."""

from __future__ import annotations

from mtpjax.errors import InputError


class FileFormatError(InputError):
    """Malformed input file. ``str(err)`` reads ``path:line: message``.

    Kept for compatibility: the positional order is ``(path, line, message)``."""

    def __init__(self, path, line: int | None, message: str):
        super().__init__(message, path, line)
