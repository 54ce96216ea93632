"""What every command line of the toolkit shares: one-line usage errors, up-front
checks of output files, and one top-level handler that turns the toolkit's errors into exit
status 2 and an interruption into 130.

Exit status everywhere: 0 success, 1 a checked claim was violated (only the theorem checks),
2 bad options, data or files (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from . import DISTRIBUTION, __version__
from .errors import InputError, PFCError

__all__ = ["OneLineParser", "add_version", "one_line", "check_output_file", "guarded"]

#: Exit status of a usage error (bad option, data or file).
USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2).

    Subparsers made with ``add_subparsers().add_parser`` inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` a ``--version`` option: the installed distribution's version, read once
    from its metadata (``importlib.metadata``; ``ufm.__version__``), then exit 0."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"{parser.prog} {__version__} ({DISTRIBUTION})",
        help="print the version and exit",
    )
    return parser


def check_output_file(path: str | os.PathLike[str] | None, option: str) -> Path:
    """Check, before any work, that a result file can be written at ``path``.

    The path must be non-empty, must not be a folder, every existing ancestor must be a folder
    (missing ones are created when the file is written), and the nearest existing one must
    accept a new file (tested by creating and removing a temporary file, which also catches
    read-only and pseudo file systems where permission bits say nothing).

    Raises
    ------
    InputError
        Naming ``option``, the value and the reason.
    """
    if path is None or str(path).strip() == "":
        raise InputError(f"{option} needs a file name, got {str(path)!r}")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {str(path)!r} is a folder; give a file name inside it")
    parent = p.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(
            f"{option} {str(path)!r} lies under {str(parent)!r}, which is a file, not a folder"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pfc-write-test-", dir=parent)
    except OSError as exc:
        raise InputError(
            f"{option} {str(path)!r}: cannot write into {str(parent)!r} "
            f"({one_line(exc.strerror or exc)}); choose a writable place"
        ) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return p


def guarded(prog: str, run: Callable[[], int], *, resume_hint: bool = False) -> int:
    """Run a command's body; turn the toolkit's errors into one line on stderr and status 2.

    ``PFCError`` (bad options or data, unusable files or checkpoints, divergence), ``OSError``
    (a file that cannot be read or written) and ``MemoryError`` give status 2; ``Ctrl-C``
    gives 130. Anything else is a bug and keeps its traceback.
    """
    try:
        return run()
    except PFCError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(
            f"{prog}: error: {one_line(exc.strerror or exc)}{where}; check the paths and "
            "permissions",
            file=sys.stderr,
        )
    except MemoryError:
        print(f"{prog}: error: out of memory; use smaller sizes", file=sys.stderr)
    except KeyboardInterrupt:
        hint = "; finished work is kept (rerun with --resume)" if resume_hint else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED
    return USAGE
