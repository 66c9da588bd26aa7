"""Error types shared by the library, the CLI and the app.

``BadInput`` means the caller handed us something we cannot use (a missing file, a wrong shape,
an unknown layer name, a parameter out of range). The CLI turns it into exit code 2 and one clear
line; any other exception is an internal failure (exit code 1).
"""

from __future__ import annotations

import unicodedata


class WorkbenchError(Exception):
    """Base class of the workbench's own errors.

    Parameters
    ----------
    *args : object
        As for ``Exception``: usually one message string.

    Returns
    -------
    A WorkbenchError (an ``Exception``).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)


class BadInput(WorkbenchError, ValueError):
    """The input (data, model, parameter or file) is unusable; the message says why.

    Also a ``ValueError``, so callers that catch ``ValueError`` catch it. The CLI maps it to exit
    code 2 and prints the message on one line.

    Parameters
    ----------
    message : str
        One line saying what is wrong and what is expected.

    Returns
    -------
    A BadInput (a :class:`WorkbenchError` and ``ValueError``).

    Examples
    --------
    >>> isinstance(BadInput("k must be >= 1"), ValueError)
    True
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


def require(condition: bool, message: str) -> None:
    """Raise :class:`BadInput` with ``message`` unless ``condition`` holds.

    Parameters
    ----------
    condition : bool
        What must be true of the input.
    message : str
        The one-line error message when it is not.

    Returns
    -------
    None

    Raises
    ------
    BadInput
        If ``condition`` is false.

    Examples
    --------
    >>> require(1 + 1 == 2, "arithmetic")
    >>> require(False, "k must be >= 1")
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: k must be >= 1
    """
    if not condition:
        raise BadInput(message)


def check_in_range(name: str, value: float, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> float:
    """Check ``low <= value <= high`` (or the open variants) and return ``value``.

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : float
        The value to check.
    low, high : float
        The bounds of the allowed interval.
    low_open, high_open : bool, default False
        Exclude the lower (upper) bound itself.

    Returns
    -------
    float
        ``value``, unchanged.

    Raises
    ------
    BadInput
        If ``value`` lies outside the interval; the message shows the interval, e.g. ``(0, 1]``.

    Examples
    --------
    >>> check_in_range("alpha", 0.05, 0, 1, low_open=True)
    0.05
    >>> check_in_range("alpha", 0, 0, 1, low_open=True)
    Traceback (most recent call last):
    ...
    workbench.errors.BadInput: alpha must be in (0, 1], got 0
    """
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise BadInput(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return value


def printable(text: object) -> str:
    """``text`` safe to print on one line of a terminal: control characters escaped.

    User-supplied names (file paths, member names of a zip, class names) end up in messages; a name
    holding a newline would break the CLI's one-line rule and one holding ESC could recolour or
    rewrite the user's terminal. Newlines, tabs, ESC, other C0/C1 controls, and Unicode line/paragraph
    separators and format characters (bidi overrides) become escapes (``\\n``, ``\\x1b``,
    ``\\u202e``); everything else, including non-ASCII letters, is kept. A lone surrogate (a file
    name that is not UTF-8) becomes ``\\udcff``.

    Parameters
    ----------
    text : object
        The text (anything: ``str()`` of it is taken).

    Returns
    -------
    str
        The text with every unprintable character escaped; unchanged when it had none.

    Examples
    --------
    >>> printable("runs/a\\nb\\x1b[31m.png")
    'runs/a\\\\nb\\\\x1b[31m.png'
    >>> printable("données/été.png")
    'données/été.png'
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        else:
            code = ord(ch)
            cat = unicodedata.category(ch)
            if cat in ("Zs",):  # other spaces: printable enough
                out.append(ch)
            else:
                out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                           else f"\\U{code:08x}")
    return "".join(out)
