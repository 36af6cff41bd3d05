"""What a signal carries, and how it reaches a handler of zero, one or many arguments.

A sender gives a signal one payload (``handle.signal(name, payload)``, the common case, kept
in the history as ``["sig", name, V]``) or a list of arguments
(``handle.signal(name, args=[a, b, c])``, kept as ``["sig", name, "*", V]``). Temporal's
handlers take the arguments their sender sent; ours do too, and a handler's signature
decides how a payload-only signal fits it, so that both ``ctx.on_signal("exit", lambda:
...)`` and ``ctx.on_signal("add", lambda n: ...)`` work with ``handle.signal(name)`` and
``handle.signal(name, 5)``:

- the arguments bind to the handler as sent: it is called with them;
- else a payload of None (``handle.signal(name)`` sends nothing else) given to a handler
  that takes no argument: it is called with none;
- else the signal does not fit: it is dropped with a warning naming the handler's
  parameters and what was sent. It was recorded, so a replay drops it the same way; the run
  goes on (a client's mistake must not stop a run).

``ctx.wait_for_signal(name)`` returns the payload, or the list of arguments.

A run also answers one query it never registered, ``HANDLERS_QUERY``: the names, parameters
and first docstring lines of the handlers it has registered so far (as Temporal's built-in
``__temporal_workflow_metadata``), so a dashboard or a client can offer them without
knowing the code. Names beginning ``__actorflow`` are reserved for such built-ins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow.definition._options import dots_problem
from actorflow.store import _keys as K

__all__ = [
    "HANDLERS_QUERY",
    "RESERVED_PREFIX",
    "Sent",
    "describe_handlers",
    "fit_args",
    "handler_problem",
    "sent_from",
    "taken_problem",
]

RESERVED_PREFIX = "__actorflow"
HANDLERS_QUERY = "__actorflow_handlers"


@dataclass(frozen=True, slots=True)
class Sent:
    """A signal's arguments as its sender sent them.

    Attributes:
        args: the arguments.
        one: sent as one payload (``args`` has exactly that one), not as a list.
    """

    args: tuple[Any, ...]
    one: bool

    @property
    def value(self) -> Any:
        """What ``ctx.wait_for_signal`` returns: the payload, or the list of arguments."""
        return self.args[0] if self.one else list(self.args)


def sent_from(resolution: Any) -> Sent:
    """The arguments of a decoded ``("sig", name, value)`` or ``("sig", name, "*", list)``."""
    if len(resolution) == 4 and resolution[2] == "*":
        return Sent(tuple(resolution[3]), False)
    return Sent((resolution[2],), True)


def fit_args(handler: Callable[..., Any], sent: Sent) -> tuple[Any, ...] | str:
    """The arguments to call ``handler`` with, or why the signal does not fit it."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # a builtin without a signature: as sent
        return sent.args
    try:
        sig.bind(*sent.args)
        return sent.args
    except TypeError:
        pass
    if sent.one and sent.args == (None,):
        try:
            sig.bind()
            return ()
        except TypeError:
            pass
    shown = "one payload" if sent.one else f"{len(sent.args)} argument(s)"
    return f"the handler takes {sig} but the signal carried {shown}"


def handler_problem(what: str, name: Any, fn: Any) -> str | None:
    """What is wrong with registering ``fn`` as the handler ``name`` (None if nothing).

    A handler's name is one a sender can address: ``handle.signal``'s rule (a key part of
    at most ``MAX_NAME`` bytes) and one URL path segment (the REST API's
    ``/api/runs/{id}/signals/{name}``, where a '/' is sent as %2F, but "." and ".." cannot
    be); the ``__actorflow`` prefix is kept for built-in queries.
    """
    problem = K.part_problem(name, f"{what}: name", K.MAX_NAME)  # a non-empty str, too
    if problem is not None:
        return problem
    problem = dots_problem(name, f"{what}: name")
    if problem is not None:
        return problem
    if name.startswith(RESERVED_PREFIX):
        return (
            f"{what}: name: {name!r} begins with {RESERVED_PREFIX!r}, which is kept for "
            "actorflow's built-in queries"
        )
    if not callable(fn):
        return f"{what} {name!r}: fn: expected a callable, got {fn!r}"
    return None


def taken_problem(name: str, waiting_first: bool) -> str:
    """Why a signal handler and a ``ctx.wait_for_signal`` may not share ``name``.

    The handler takes every signal of its name, so the wait would never end: a silent hang
    becomes an error at the line that makes it.
    """
    if waiting_first:
        return (
            f"ctx.on_signal {name!r}: a ctx.wait_for_signal({name!r}) is waiting; the "
            "handler would take every signal and the wait would never end"
        )
    return (
        f"ctx.wait_for_signal {name!r}: a handler (ctx.on_signal) takes every signal "
        f"{name!r}, so this wait would never end; await ctx.wait_condition(...) on what the "
        "handler sets instead"
    )


def describe_handlers(
    tables: dict[str, dict[str, Callable[..., Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """``HANDLERS_QUERY``'s answer: per kind, the handlers by name.

    Each is ``{"name", "params", "signature", "takes", "doc"}``: the parameter names, the
    signature as Python prints it (``"(x, y=None, *rest)"``), how many positional
    arguments it takes (``[least, most]``, most None with ``*args``), all three None where
    Python cannot read the handler's signature, and the first line of its docstring (""
    without one).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, table in tables.items():
        rows = []
        for name in sorted(table):
            fn = table[name]
            sig = _signature(fn)
            doc = (inspect.getdoc(fn) or "").strip().splitlines()
            # Only a def's (or method's) docstring is the user's: a builtin's (list.append)
            # or a partial's is its type's.
            own = inspect.isfunction(fn) or inspect.ismethod(fn)
            rows.append(
                {
                    "name": name,
                    "params": None if sig is None else list(sig.parameters),
                    "signature": None if sig is None else str(sig),
                    "takes": None if sig is None else _takes(sig),
                    "doc": doc[0] if doc and own else "",
                }
            )
        out[kind] = rows
    return out


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``fn``'s signature, its annotations evaluated (or dropped if they cannot be).

    Evaluated, ``x: int`` shows as such, not as ``x: 'int'`` (``from __future__ import
    annotations`` keeps them as strings).
    """
    try:
        return inspect.signature(fn, eval_str=True)
    except (TypeError, ValueError):
        return None  # a builtin without a signature
    except Exception:
        sig = inspect.signature(fn)
        bare = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
        return sig.replace(parameters=bare, return_annotation=sig.empty)


def _takes(sig: inspect.Signature) -> list[int | None]:
    """``[least, most]`` positional arguments ``sig`` binds (most None: any number)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    least = most = 0
    for p in sig.parameters.values():
        if p.kind in positional:
            most += 1
            least += p.default is inspect.Parameter.empty
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            return [least, None]
    return [least, most]
