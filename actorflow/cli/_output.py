r"""What every ``actorflow`` command prints, and how it ends.

One place, so no command formats output by hand.

- Data goes to stdout; messages, progress and (text) errors go to stderr.
- A table is a rich table when stdout is a terminal (rich decides: a TTY, or ``FORCE_COLOR``
  / ``TTY_COMPATIBLE=1``; ``NO_COLOR`` keeps it colourless). Otherwise it is plain, for
  ``grep``, ``cut -f`` and ``awk -F'\t'``: a header line, then one line per row, fields
  separated by tabs (a tab or newline inside a field becomes a space), nothing cut short,
  no colour. Without rich installed, tables are always plain.
- ``--json``: one JSON document on stdout. An error is then a JSON object on stdout too
  (``{"error": code, "detail": message, "exit": status}``), so ``actorflow ... --json | jq``
  always reads one document; without ``--json`` it is ``actorflow COMMAND: message`` on
  stderr.
- Exit statuses are :class:`Exit`, listed in ``actorflow --help``.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from actorflow.errors import ActorflowError, ClientError

__all__ = ["EXIT_HELP", "Column", "CommandError", "Exit", "Output", "UsageError", "error_code"]


class Exit(IntEnum):
    """The exit statuses of every ``actorflow`` command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    TIMEOUT = 3
    FAILED = 4
    INTERRUPTED = 130
    CLOSED_PIPE = 141


_MEANINGS = {
    Exit.OK: "done; the answer is yes",
    Exit.ERROR: "error: the command could not do its job (no store, no such run, the engine "
    "refused or did not answer, a bad file...)",
    Exit.USAGE: "usage: arguments it cannot use",
    Exit.TIMEOUT: "timeout: `wait --timeout` ran out with the run still going, or the engine "
    "did not answer within --timeout",
    Exit.FAILED: "the command worked and the answer is no: the run failed or was cancelled "
    "(wait), a check failed (doctor, store check), the code diverged (replay), the run had "
    "already ended (cancel)",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
    Exit.CLOSED_PIPE: "stdout was closed early (`actorflow runs | head`): output stops "
    "quietly, as a tool killed by SIGPIPE would (128 + 13)",
}

#: The exit statuses, as ``actorflow --help`` lists them.
EXIT_HELP = "exit status:\n" + "\n".join(
    textwrap.fill(meaning, 79, initial_indent=f"  {int(code):<5}", subsequent_indent=" " * 7)
    for code, meaning in _MEANINGS.items()
)


class CommandError(ActorflowError):
    """A command's failure, with the code its JSON error carries and its exit status.

    Args:
        message: what went wrong, and what to do about it.
        code: the ``error`` of the JSON error object (snake case).
        exit: the exit status.
        extra: more fields for the JSON error object (an HTTP status, say).
    """

    def __init__(
        self, message: str, code: str = "error", exit: Exit = Exit.ERROR, **extra: Any
    ) -> None:
        super().__init__(message)
        self.error_code = code
        self.exit = exit
        self.extra = extra


class UsageError(CommandError, ClientError):
    """Arguments a command cannot use (exit status 2)."""

    def __init__(self, message: str, usage: str = "", prog: str = "") -> None:
        super().__init__(message, "usage", Exit.USAGE)
        self.usage = usage
        self.prog = prog


def error_code(exc: BaseException) -> str:
    """The ``error`` of the JSON error object.

    A command's own code, else the exception's class in snake case (``run_not_found``,
    ``store_error``, ``config_error``...).
    """
    code = getattr(exc, "error_code", None)
    if isinstance(code, str):
        return code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


@dataclass(frozen=True)
class Column:
    """A table column.

    Attributes:
        name: its header.
        right: right-aligned (numbers).
        status: its values are statuses or verdicts, coloured on a terminal.
        wrap: on a terminal, long values wrap (else they are cut with an ellipsis).
    """

    name: str
    right: bool = False
    status: bool = False
    wrap: bool = False


#: Colours of statuses and verdicts on a terminal (none under NO_COLOR or off a terminal).
_STYLES = {
    "completed": "green",
    "succeeded": "green",
    "ok": "green",
    "failed": "red",
    "fail": "bold red",
    "timeout": "red",
    "crash": "red",
    "cancelled": "yellow",
    "warn": "yellow",
    "running": "cyan",
    "retrying": "cyan",
    "waiting": "magenta",
    "queued": "dim",
    "pending": "dim",
    "skipped": "dim",
}


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _plain(value: Any) -> str:
    return _cell(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


class Output:
    """A command's output: tables, records and lines as text, or JSON with ``--json``.

    Args:
        command: the command's name (errors start ``actorflow COMMAND:``).
        as_json: print JSON documents, and errors as JSON objects.
    """

    def __init__(self, command: str | None, as_json: bool = False) -> None:
        self.command = command
        self.as_json = as_json
        self._console: Any = None
        self._terminal: bool | None = None

    @classmethod
    def of(cls, args: Any) -> Output:
        """The output of a parsed command line (its command and ``--json``)."""
        return cls(getattr(args, "command", None), bool(getattr(args, "json", False)))

    @property
    def terminal(self) -> bool:
        """Whether stdout is a terminal, as rich sees it (False without rich)."""
        if self._terminal is None:
            try:
                from rich.console import Console
            except ImportError:  # rich is optional for the CLI: plain tables then
                self._terminal = False
            else:
                self._console = Console(file=sys.stdout, highlight=False)
                self._terminal = bool(self._console.is_terminal)
        return self._terminal

    def json(self, data: Any) -> None:
        """Print ``data`` as one JSON document."""
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")

    def result(self, data: Any, text: str) -> None:
        """Print a command's result: ``data`` as JSON with ``--json``, else ``text``."""
        if self.as_json:
            self.json(data)
        else:
            self.line(text)

    def line(self, text: str = "") -> None:
        """Print a line of text on stdout, as it is (no markup)."""
        sys.stdout.write(text + "\n")

    def note(self, text: str) -> None:
        """Print a message for the person at the terminal on stderr."""
        sys.stderr.write(f"{text}\n")

    def table(
        self,
        columns: Sequence[Column | str],
        rows: Iterable[Sequence[Any]],
        empty: str | None = None,
    ) -> None:
        """Print rows under ``columns`` (a rich table on a terminal, else tab-separated).

        Args:
            columns: the columns, or just their names.
            rows: one sequence of values per row (None prints as ``-``).
            empty: on a terminal, said instead of an empty table (plain: the header alone).
        """
        cols = [c if isinstance(c, Column) else Column(c) for c in columns]
        rows = list(rows)
        if not self.terminal:
            out = ["\t".join(c.name for c in cols)]
            out += ["\t".join(_plain(v) for v in row) for row in rows]
            sys.stdout.write("\n".join(out) + "\n")
            return
        if not rows and empty is not None:
            self.line(empty)
            return
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
        for c in cols:
            table.add_column(
                c.name,
                justify="right" if c.right else "left",
                no_wrap=not c.wrap,
                overflow="fold" if c.wrap else "ellipsis",
            )
        for row in rows:
            cells = []
            for c, v in zip(cols, row, strict=True):
                text = _cell(v)  # Text: values are never read as rich markup ("[2] price")
                cells.append(Text(text, style=_STYLES.get(text, "") if c.status else ""))
            table.add_row(*cells)
        self._console.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Print ``name value`` lines (aligned on a terminal, tab-separated otherwise)."""
        if not self.terminal:
            sys.stdout.write("".join(f"{k}\t{_plain(v)}\n" for k, v in pairs))
            return
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for k, v in pairs:
            grid.add_row(Text(k), Text(_cell(v), style=_STYLES.get(_cell(v), "")))
        self._console.print(grid)

    def error(self, exc: BaseException, exit: Exit | None = None) -> int:
        """Report ``exc`` (JSON with ``--json``, else a line on stderr); its exit status."""
        status = exit if exit is not None else getattr(exc, "exit", Exit.ERROR)
        detail = str(exc) or type(exc).__name__
        if self.as_json:
            body: dict[str, Any] = {"error": error_code(exc), "detail": detail}
            body.update(getattr(exc, "extra", None) or {})
            self.json({**body, "exit": int(status)})
        else:
            who = f"actorflow {self.command}" if self.command else "actorflow"
            if isinstance(exc, UsageError):
                sys.stderr.write(exc.usage)
                who = exc.prog or who
            self.note(f"{who}: {detail}")
        return int(status)
