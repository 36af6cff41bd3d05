"""Errors of a call made to the engine: a name, payload, token or state it cannot use.

Each names what was asked for (the run id, the workflow and the ones that exist, the URL) so a
caller can tell its own mistake from the engine's; ``KeyError``, ``ValueError`` and
``ConnectionError`` are bases where Python code would expect them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._base import ActorflowError


class ClientError(ActorflowError):
    """A client call got an argument it cannot use."""


class RunNotFound(ClientError, KeyError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WorkflowNotFound(ClientError, KeyError):
    """No workflow has this id."""

    def __init__(self, workflow: str, known: Sequence[str] = ()) -> None:
        self.workflow = workflow
        hint = f"; defined: {', '.join(sorted(known))}" if known else "; none are defined"
        super().__init__(f"no workflow {workflow!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class ScheduleNotFound(ClientError, KeyError):
    """No schedule has this name (``"<workflow>#<n>"``: see ``engine.schedules()``).

    Attributes:
        name: the name asked for.
        known: the names of the engine's schedules.
    """

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        self.name = name
        self.known = tuple(known)
        hint = f"; schedules: {', '.join(sorted(known))}" if known else "; there are none"
        super().__init__(f"no schedule {name!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.name, self.known))


class InvalidPayload(ClientError, ValueError):
    """A payload or argument cannot be stored (not JSON-compatible and not picklable)."""


class EngineNotRunning(ClientError):
    """The call needs a started engine (``with engine:`` or ``engine.start()``)."""


class LeaderLost(EngineNotRunning):
    """The leader went away while a call that cannot safely be sent twice was in flight.

    A follower repeats what is safe to repeat (triggers, waits for results, cancels,
    queries, signals, reads) against the next leader; a ``resume``, ``update``, ``publish``
    or ``retry`` may or may not have taken effect: check before repeating it.
    """


class EngineUnreachable(EngineNotRunning, ConnectionError):
    """:class:`~actorflow.Client`: nothing answers at the engine's URL.

    The connection was refused or cut, the host name does not resolve, or no answer came
    within the client's ``timeout``. It is an :class:`EngineNotRunning` (from the client's side
    no engine runs there) and a ``ConnectionError``.

    Attributes:
        url: the engine's URL, as the client was given it.
        reason: what the network said (``[Errno 111] Connection refused``...).
        timeout: the seconds waited, when no answer came in time; else None.
    """

    def __init__(self, url: str, reason: str, timeout: float | None = None) -> None:
        self.url = url
        self.reason = reason
        self.timeout = timeout
        if timeout is not None:
            message = f"the engine at {url} did not answer within {timeout:g}s ({reason})"
        else:
            message = f"no engine answers at {url} ({reason})"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.reason, self.timeout))


class AccessDenied(ClientError):
    """:class:`~actorflow.Client`: the engine's API refused the request.

    A 401: the API needs a token (``af.Client(url, token=...)``) and none, or another one,
    was sent. A 403: the token was fine but the action is not allowed (the API is read-only,
    or the request looked cross-site). The message is the server's, and says which.

    Attributes:
        status: the HTTP status, 401 or 403.
    """

    def __init__(self, message: str, status: int = 401) -> None:
        self.status = status
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status))


class ApprovalError(ClientError):
    """``engine.resume(token, ...)`` cannot resume anything with this token."""


class ApprovalNotFound(ApprovalError, KeyError):
    """No approval has this token."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such approval"


class ApprovalAlreadyResolved(ApprovalError):
    """The approval was already resumed (or its run ended); a token works once."""


class ApprovalExpired(ApprovalError):
    """The approval's timeout passed before it was resumed."""
