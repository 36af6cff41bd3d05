"""Pins the public surface: a change here is a change of the API."""

from __future__ import annotations

import actorflow as af

PUBLIC = {
    "ActorflowError", "AttemptDetails", "ClientError", "Clock", "ConfigError", "DefinitionError",
    "Engine", "EngineConfig", "EngineNotRunning", "ErrorDetails", "Flow", "GraphError",
    "InvalidPayload", "RunDepthExceeded",
    "MaxIterationsExceeded", "ManualClock", "PoolUnavailable", "RemoteError", "RemoteTraceback",
    "ResultTimeout", "Retry", "RunCancelled", "RunDetails", "RunError", "RunHandle", "RunInfo",
    "ParentClosePolicy", "Cache", "Queue", "Interceptor", "StartCall", "SignalCall",
    "QueryCall", "UpdateCall", "StepCall",
    "RunNotFound", "RunStatus", "RunSummary", "RunTimeout", "StepContext", "StepDetails",
    "StepFailed", "StepOutput", "StepStatus", "StepTimeout", "StoreCorrupted", "StoreError",
    "StoreFull", "StoreInUse", "LeaderLost", "SystemClock", "WorkerCrashed", "Workflow",
    "WorkflowNotFound", "__version__",
    # triggers, events, approvals, state and services
    "ApprovalAlreadyResolved", "ApprovalError", "ApprovalExpired", "ApprovalNotFound", "Secret",
    "Service", "State", "WaitTimeout", "define_service",
    # code workflows
    "CodeWorkflow", "HeartbeatTimeout", "NondeterminismError", "PanicPolicy", "WorkflowContext",
    "WorkflowFailed", "WorkflowInfo", "step_context", "testing",
    # where steps run: the protocol and its executors
    "Executor", "ProcessExecutor", "InlineExecutor", "DaskExecutor", "RayExecutor", "executors",
    # observability, operations
    "observability", "CircuitBreaker", "CircuitOpen", "LifecycleEvent", "RunStarted",
    "StepAttempted", "RunFinished", "PruneReport",
    # deploys
    "WorkflowVersion",
    # schedules paused, resumed and triggered by name
    "ScheduleNotFound",
    # hostile input
    "WriteRejected",
    # a lean core: an optional surface without its extra
    "MissingExtra",
    # a client for other machines
    "Client", "AsyncClient", "RemoteRunHandle", "AccessDenied", "EngineUnreachable",
}  # fmt: skip


def test_public_names() -> None:
    assert set(af.__all__) == PUBLIC
    for name in af.__all__:
        assert getattr(af, name) is not None


def test_one_exception_tree() -> None:
    for name in af.__all__:
        obj = getattr(af, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, af.ActorflowError), name
    assert issubclass(af.StepTimeout, af.StepFailed)
    assert issubclass(af.WorkerCrashed, af.StepFailed)
    assert issubclass(af.GraphError, af.DefinitionError)
    assert issubclass(af.ResultTimeout, TimeoutError)
    assert issubclass(af.HeartbeatTimeout, af.StepTimeout)
    assert issubclass(af.NondeterminismError, af.RunError)
    assert issubclass(af.WorkflowFailed, af.RunError)
    assert issubclass(af.MissingExtra, af.ConfigError)
    assert issubclass(af.MissingExtra, ImportError)
    assert issubclass(af.EngineUnreachable, af.EngineNotRunning)
    assert issubclass(af.EngineUnreachable, ConnectionError)
    assert issubclass(af.AccessDenied, af.ClientError)


def test_every_error_is_named_where_records_and_pickles_find_it() -> None:
    """Stored error records and pickles name a class by ``__module__``: the errors live in
    private modules of ``actorflow/errors/``, and each must still be ``actorflow.errors.X``,
    so a store written before the split (or after a later move) resolves every name."""
    import pickle

    import actorflow.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls.__module__ == "actorflow.errors", name
        assert getattr(errors, cls.__qualname__) is cls, name
    # The name a record stores is the one the supervisors compute from the live class.
    timeout = errors.StepTimeout("s", 2, 1.5, run_id="r1")
    assert f"{type(timeout).__module__}.{type(timeout).__qualname__}" == timeout.error_type
    blob = pickle.dumps(timeout)
    assert b"actorflow.errors._" not in blob  # no private module in what may be stored
    back = pickle.loads(blob)
    assert type(back) is errors.StepTimeout
    assert (back.step, back.attempt, back.timeout, back.run_id) == ("s", 2, 1.5, "r1")
    assert str(back) == str(timeout)


def test_public_names_are_documented() -> None:
    for name in af.__all__:
        obj = getattr(af, name)
        if isinstance(obj, type):
            assert obj.__doc__, name


def test_the_version_is_the_packages() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert af.__version__ == project["project"]["version"]


def public_signatures() -> str:
    """One line per public callable: every name of ``af.__all__`` and the public methods and
    properties of its classes, with their signatures (annotations as written)."""
    import enum
    import inspect
    import re

    lines = []

    def sig(obj: object) -> str:
        try:
            text = str(inspect.signature(obj))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "(...)"
        return re.sub(r" at 0x[0-9a-f]+", "", text)  # a sentinel default's address

    for name in sorted(af.__all__):
        obj = getattr(af, name)
        if inspect.ismodule(obj):
            lines.append(f"{name}: module")
            continue
        if not inspect.isclass(obj):
            lines.append(f"{name}{sig(obj)}" if callable(obj) else f"{name}: {type(obj).__name__}")
            continue
        if issubclass(obj, BaseException):
            lines.append(f"{name}({', '.join(b.__name__ for b in obj.__bases__)})")
            continue
        if issubclass(obj, enum.Enum):
            lines.append(f"{name}: {', '.join(str(m.value) for m in obj)}")
            continue
        lines.append(f"{name}{sig(obj)}")
        for attr, member in sorted(inspect.getmembers(obj)):
            if attr.startswith("_"):
                continue
            if isinstance(inspect.getattr_static(obj, attr), property):
                lines.append(f"{name}.{attr}: property")
            elif inspect.isfunction(member) or inspect.ismethod(member):
                lines.append(f"{name}.{attr}{sig(member)}")
    return "\n".join(lines) + "\n"


SIGNATURES = __import__("pathlib").Path(__file__).with_name("public_api.txt")


def test_public_signatures_are_pinned() -> None:
    """A change of a public signature is a change of the API: update tests/public_api.txt
    on purpose (``python -m tests.test_exports``) and say so in the docs."""
    import difflib

    now = public_signatures()
    pinned = SIGNATURES.read_text()
    diff = "".join(
        difflib.unified_diff(pinned.splitlines(True), now.splitlines(True), "pinned", "now")
    )
    assert now == pinned, diff


if __name__ == "__main__":
    SIGNATURES.write_text(public_signatures())
    print(f"wrote {SIGNATURES}")
