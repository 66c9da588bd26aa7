"""The ``workbench`` command line: parses input, calls the library, renders results. No science here.

Exit codes: 0 success, 1 internal failure, 2 bad input or usage, 3 findings over a ``--fail-*``
threshold. Each command lives in its own module below and registers itself on :data:`app` or one
of its groups (``attack``, ``defend``, ``audit``, ``diffusion``).
"""

from __future__ import annotations

import sys

import typer

# Typer >= 0.22 vendors its own copy of click; its exceptions are the ones raised here.
try:
    from typer import _click as click  # noqa: I001
except ImportError:  # older Typer runs on the click package
    import click

from ..errors import BadInput, printable
from .base import STATE, app

# Command modules register themselves on import (one module per capability).
from . import train as _train  # noqa: E402,F401
from . import saliency as _saliency  # noqa: E402,F401
from . import labels as _labels  # noqa: E402,F401
from . import backdoor as _backdoor  # noqa: E402,F401
from . import certify as _certify  # noqa: E402,F401
from . import defend as _defend  # noqa: E402,F401
from . import diffusion as _diffusion  # noqa: E402,F401
from . import audit_run as _audit_run  # noqa: E402,F401
from . import data as _data  # noqa: E402,F401
from . import sweep as _sweep  # noqa: E402,F401

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_FINDINGS = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="workbench", standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        print("workbench: aborted", file=sys.stderr)
        code = EXIT_INTERNAL
    except KeyboardInterrupt:  # Ctrl-C: the staged output folder was already removed, the old one kept
        print("workbench: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except click.exceptions.ClickException as exc:  # usage errors: unknown option, missing argument, bad value
        exc.show(file=sys.stderr)
        code = EXIT_BAD_INPUT
    except (BadInput, FileNotFoundError) as exc:
        print(f"workbench: error: {printable(exc)}", file=sys.stderr)  # one line, whatever names it holds
        if debug or STATE.debug:
            raise
        code = EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into exit code 1
        print(f"workbench: internal error: {type(exc).__name__}: {printable(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        if debug or STATE.debug:
            raise
        code = EXIT_INTERNAL
    if argv is None:
        sys.exit(code)
    return code


__all__ = ["app", "main", "typer"]
