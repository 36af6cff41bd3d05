"""Services: typed, validated configuration plus actions that steps call by name.

``af.define_service(id, config=..., actions=..., setup=...)`` describes a client for an outside
system; ``.with_config(**values)`` checks the values against the schema at definition time and
lists every missing or mistyped field in one :class:`~actorflow.errors.DefinitionError`.
``engine.define(..., services=[...])`` attaches configured services to a workflow, and a step
calls ``ctx.services.<id>.<action>(...)``: in each worker process the service is set up once
(``setup(config)``), on first use, and each action is called as ``action(client, *args)``.

Secrets never travel as values: :class:`Secret` names an environment variable that is read
when the service is set up, in the process that uses it, and its value never appears in a
repr, a stored definition or an error message.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actorflow.definition._build import validate_name
from actorflow.errors import DefinitionError

__all__ = ["Secret", "Service", "ServiceInstance", "define_service"]

_NO_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class Secret:
    """A configuration value read from environment variable ``env`` when the service starts.

    Args:
        env: the variable's name.
    """

    env: str

    def resolve(self) -> str:
        """The variable's value in this process.

        Raises:
            DefinitionError: the variable is not set (its value is never shown).
        """
        value = os.environ.get(self.env)
        if value is None:
            raise DefinitionError([f"environment variable {self.env!r} is not set"])
        return value

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r})"


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: Any
    default: Any


class Service:
    """A service definition; configure it with :meth:`with_config`.

    Made by :func:`define_service`.
    """

    def __init__(
        self,
        service_id: str,
        fields: tuple[_Field, ...],
        actions: Mapping[str, Callable[..., Any]],
        setup: Callable[[Any], Any] | None,
        schema: Any,
        breakers: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = service_id
        self._fields = fields
        self.actions = dict(actions)
        self.setup = setup
        self._schema = schema
        #: Action name -> its circuit breaker (engine side only: not sent to workers).
        self.breakers: dict[str, Any] = dict(breakers or {})
        #: Actions guarded by a breaker (what a worker knows of them).
        self.guarded = frozenset(self.breakers)

    def __getstate__(self) -> dict[str, Any]:
        # Breakers hold locks and live in the engine; a worker asks the engine about them.
        state = dict(self.__dict__)
        state["breakers"] = {}
        return state

    @property
    def fields(self) -> list[str]:
        """The names of the configuration fields."""
        return [f.name for f in self._fields]

    def with_config(self, **values: Any) -> ServiceInstance:
        """Check ``values`` against the schema and return the configured service.

        A value may be a :class:`Secret` for a string field.

        Raises:
            DefinitionError: listing every missing, unknown or mistyped field.
        """
        problems: list[str] = []
        config: dict[str, Any] = {}
        known = {f.name for f in self._fields}
        for name in values:
            if name not in known:
                problems.append(
                    f"service {self.id!r}: config.{name}: unknown field "
                    f"(expected one of {sorted(known)})"
                )
        for f in self._fields:
            if f.name not in values:
                if f.default is _NO_DEFAULT:
                    problems.append(
                        f"service {self.id!r}: config.{f.name}: missing (expected "
                        f"{_type_name(f.type)})"
                    )
                else:
                    config[f.name] = f.default
                continue
            value = values[f.name]
            if isinstance(value, Secret):
                if not _accepts(f.type, ""):
                    problems.append(
                        f"service {self.id!r}: config.{f.name}: a Secret gives a string, but "
                        f"the field expects {_type_name(f.type)}"
                    )
                elif os.environ.get(value.env) is None:
                    problems.append(
                        f"service {self.id!r}: config.{f.name}: environment variable "
                        f"{value.env!r} is not set"
                    )
            elif not _accepts(f.type, value):
                problems.append(
                    f"service {self.id!r}: config.{f.name}: expected {_type_name(f.type)}, "
                    f"got {type(value).__name__}"
                )
            config[f.name] = value
        if problems:
            raise DefinitionError(problems)
        return ServiceInstance(self, config)

    def __repr__(self) -> str:
        return f"<Service {self.id!r}: actions {sorted(self.actions)}>"


class ServiceInstance:
    """A service with a validated configuration, ready to attach to workflows.

    Attributes:
        service: the definition.
    """

    def __init__(self, service: Service, config: dict[str, Any]) -> None:
        self.service = service
        self._config = config

    @property
    def id(self) -> str:
        """The service id (``ctx.services.<id>``)."""
        return self.service.id

    def with_secrets(self) -> ServiceInstance:
        """A copy with every :class:`Secret` replaced by its value in this process.

        The engine sends this copy to a worker over its private pipe: a worker started by
        the forkserver has the environment of when the forkserver started, not the engine's.
        """
        values = {k: v.resolve() if isinstance(v, Secret) else v for k, v in self._config.items()}
        return ServiceInstance(self.service, values)

    def resolved_config(self) -> Any:
        """The configuration with secrets read from the environment, as the schema's type."""
        values = {k: v.resolve() if isinstance(v, Secret) else v for k, v in self._config.items()}
        schema = self.service._schema
        if isinstance(schema, type) and dataclasses.is_dataclass(schema):
            return schema(**values)
        return types.SimpleNamespace(**values)

    def create(self) -> Any:
        """Set the service up: ``setup(config)``, or the config itself without a setup."""
        config = self.resolved_config()
        setup = self.service.setup
        return setup(config) if setup is not None else config

    def describe(self) -> dict[str, Any]:
        """What the stored definition records: no values (they may be secret)."""
        return {
            "id": self.id,
            "config": sorted(self._config),
            "actions": sorted(self.service.actions),
        }

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v!r}" if isinstance(v, Secret) else f"{k}=..." for k, v in self._config.items()
        )
        return f"<ServiceInstance {self.id!r}({shown})>"


def define_service(
    service_id: str,
    *,
    config: Any = None,
    actions: Mapping[str, Callable[..., Any]] | None = None,
    setup: Callable[[Any], Any] | None = None,
    breaker: Any = None,
) -> Service:
    """Define a service that steps reach as ``ctx.services.<service_id>``.

    Args:
        service_id: its name (a Python identifier).
        config: the configuration schema: a dataclass, or a mapping of field name to a type
            or to ``(type, default)``. None: no configuration.
        actions: action name to ``fn(client, *args, **kwargs)``; ``client`` is what
            ``setup`` returned.
        setup: ``setup(config) -> client``, called once per worker process on first use;
            ``config`` is an instance of the dataclass (or a namespace).
        breaker: an :class:`~actorflow.CircuitBreaker` guarding every action, or a mapping
            of action name to breaker. The engine keeps its state (shared by every worker
            and run); while it is open, the action raises :class:`~actorflow.CircuitOpen`
            without being called, which fails the step's attempt (retried by its policy).

    Raises:
        DefinitionError: listing every problem with the definition.
    """
    problems: list[str] = []
    if (p := validate_name(service_id, "service id")) is not None:
        problems.append(p)
    elif not service_id.isidentifier():
        problems.append(f"service id: expected a Python identifier, got {service_id!r}")
    fields = _fields(config, problems)
    acts: dict[Any, Any] = dict(actions or {})  # checked below: callers may be untyped
    for name, fn in acts.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            problems.append(f"service {service_id!r}: action name {name!r}: expected an identifier")
        if not callable(fn):
            problems.append(
                f"service {service_id!r}: action {name!r}: expected a callable "
                f"(client, *args), got {fn!r}"
            )
    setup_any: Any = setup
    if setup_any is not None and not callable(setup_any):
        problems.append(
            f"service {service_id!r}: setup: expected a callable (config), got {setup!r}"
        )
    breakers = _breakers(service_id, breaker, acts, problems)
    if problems:
        raise DefinitionError(problems)
    return Service(service_id, fields, acts, setup, config, breakers)


def _breakers(
    service_id: str, breaker: Any, actions: Mapping[Any, Any], problems: list[str]
) -> dict[str, Any]:
    from actorflow.definition._breaker import CircuitBreaker

    if breaker is None:
        return {}
    if isinstance(breaker, CircuitBreaker):
        return {name: breaker for name in actions if isinstance(name, str)}
    if not isinstance(breaker, Mapping):
        problems.append(
            f"service {service_id!r}: breaker: expected af.CircuitBreaker(...) or a mapping "
            f"of action name to one, got {breaker!r}"
        )
        return {}
    out: dict[str, Any] = {}
    for name, b in breaker.items():
        if name not in actions:
            problems.append(
                f"service {service_id!r}: breaker[{name!r}]: no such action "
                f"(actions: {sorted(str(a) for a in actions)})"
            )
        elif not isinstance(b, CircuitBreaker):
            problems.append(
                f"service {service_id!r}: breaker[{name!r}]: expected af.CircuitBreaker(...), "
                f"got {b!r}"
            )
        else:
            out[name] = b
    return out


def _fields(schema: Any, problems: list[str]) -> tuple[_Field, ...]:
    if schema is None:
        return ()
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        out = []
        for f in dataclasses.fields(schema):
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            out.append(
                _Field(
                    f.name,
                    hints.get(f.name, Any),
                    _NO_DEFAULT if default is dataclasses.MISSING else default,
                )
            )
        return tuple(out)
    if isinstance(schema, Mapping):
        out = []
        for name, spec in schema.items():
            if isinstance(spec, tuple) and len(spec) == 2:
                out.append(_Field(str(name), spec[0], spec[1]))
            else:
                out.append(_Field(str(name), spec, _NO_DEFAULT))
        return tuple(out)
    problems.append(
        f"config: expected a dataclass or a mapping of field name to type, got {schema!r}"
    )
    return ()


def _accepts(tp: Any, value: Any) -> bool:
    """True if ``value`` fits type annotation ``tp`` (plain classes, unions, generics)."""
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin is not None:
        tp = origin
    if not isinstance(tp, type):
        return True  # an annotation this check does not understand: trust the value
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
