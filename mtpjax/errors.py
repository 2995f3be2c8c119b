"""The project's one input-error type: a bad file, a bad option, a bad config value.

Every reader and validator raises :class:`InputError` (or a subclass) with the offending file
``path`` and 1-based ``line`` (``None`` where no single line is at fault), so that the command
line shell can print one line, ``mtpjax: error: FILE:LINE: message``, and the Python API can
inspect ``err.path`` / ``err.line``. Anything else escaping a command is a bug, not bad input.
"""

from __future__ import annotations


class InputError(ValueError):
    """Unusable input. ``str(err)`` reads ``path:line: message`` (or ``path: message``).

    Attributes:
        path: the file at fault (``str``), or ``None`` (e.g. an in-memory object or a flag).
        line: 1-based line number in ``path``, or ``None`` where no single line is at fault.
        message: what is wrong and what was expected.
    """

    def __init__(self, message: str, path=None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = None if line is None else int(line)
        self.message = str(message)
        super().__init__(self._text())

    def _text(self) -> str:
        if self.path is None:
            return self.message
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self):  # picklable across worker processes, whatever the subclass signature
        return (_restore, (type(self), dict(self.__dict__)))

    def located(self, path, line: int | None = None, prefix: str = "") -> InputError:
        """A copy of this error placed in ``path`` (and ``line``), message prefixed by
        ``prefix`` (e.g. ``"configuration 3: "``); keeps the subclass."""
        err = InputError.__new__(type(self))
        InputError.__init__(err, prefix + self.message, path, line)
        for k, v in self.__dict__.items():
            if k not in ("path", "line", "message"):
                setattr(err, k, v)
        return err


class GeometryError(InputError):
    """An atomic geometry no potential can evaluate: coincident atoms, a singular cell.

    ``atoms`` holds the 0-based indices of the atoms at fault (may be empty)."""

    def __init__(self, message: str, path=None, line: int | None = None, atoms=()):
        self.atoms = tuple(int(a) for a in atoms)
        super().__init__(message, path, line)


def _restore(cls, state: dict) -> InputError:
    err = cls.__new__(cls)
    InputError.__init__(err, state["message"], state["path"], state["line"])
    err.__dict__.update(state)
    return err
