"""The project's error contract: what a user sees when a command fails.

* ``Morph4DError`` (a ``ValueError``): the user's input was wrong -- a missing or malformed file, a bad
  value, a run folder of another configuration. Raised with a message that says what was wrong and what
  was expected; the command prints ``error: MESSAGE`` and exits 2, without a traceback.
* A file the user named that does not exist (``FileNotFoundError``): the same, exit 2.
* Any other ``OSError`` (an unwritable folder, an output path below a file, a full disk): the machine
  refused, not the user's syntax: ``error: ...``, exit 1.
* Anything else is a bug in morph4d: ``internal error: ...``, the full traceback written to a file whose
  path is printed, exit 1. A ``ValueError`` raised by a library is a bug too, never "bad input".
* Ctrl-C: ``interrupted``, exit 130 (long jobs resume from their saved state).

Every command group runs through ``run_command``; nothing else catches these.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback


class Morph4DError(ValueError):
    """Bad user input: the message says what was wrong and what was expected (exit 2)."""


class InputNotFoundError(Morph4DError, FileNotFoundError):
    """A file or folder the user named does not exist (exit 2)."""


def traceback_file(exc: BaseException) -> str:
    """Write ``exc``'s full traceback to a new file in the temporary folder; returns its path."""
    fd, path = tempfile.mkstemp(prefix=f"morph4d-traceback-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"morph4d {' '.join(sys.argv[1:])}\n\n")
        fh.write("".join(traceback.format_exception(exc)))
    return path


def run_command(args) -> int:
    """Run a parsed command (``args.func(args)``) under the contract of the module docstring."""
    try:
        args.func(args)
    except (Morph4DError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so, keep the trace
        try:
            where = f"full traceback in {traceback_file(e)}"
        except OSError:   # no writable temporary folder: the traceback goes to the terminal instead
            traceback.print_exception(e, file=sys.stderr)
            where = "traceback above"
        print(f"internal error: {type(e).__name__}: {e}\n(this is a bug in morph4d; {where})", file=sys.stderr)
        return 1
    return 0


__all__ = ["InputNotFoundError", "Morph4DError", "run_command", "traceback_file"]
