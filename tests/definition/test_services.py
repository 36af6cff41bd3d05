"""Services: config validated at definition, secrets from env, set up once per worker."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import actorflow as af


@dataclass
class MailConfig:
    host: str
    port: int
    api_key: str
    timeout: float = 5.0


class MailClient:
    def __init__(self, config: MailConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        self.sent = 0


def send(client: MailClient, to: str) -> dict[str, Any]:
    client.sent += 1
    return {
        "to": to,
        "via": f"{client.config.host}:{client.config.port}",
        "key_len": len(client.config.api_key),
        "pid": client.pid,
        "setup_id": id(client),
        "sent_by_this_client": client.sent,
    }


mail = af.define_service("mail", config=MailConfig, actions={"send": send}, setup=MailClient)


def test_config_errors_listed_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_ENV", raising=False)
    with pytest.raises(af.DefinitionError) as info:
        mail.with_config(port="25", api_key=af.Secret("NO_SUCH_SECRET_ENV"), colour="red")
    problems = "\n".join(info.value.problems)
    assert "config.host: missing" in problems
    assert "config.port: expected int, got str" in problems
    assert "NO_SUCH_SECRET_ENV" in problems and "is not set" in problems
    assert "config.colour: unknown field" in problems
    assert len(info.value.problems) == 4


def test_bad_service_definitions() -> None:
    with pytest.raises(af.DefinitionError) as info:
        af.define_service("not an id", config=42, actions={"x": 1}, setup="nope")  # type: ignore[arg-type, dict-item]
    text = str(info.value)
    for part in ("service id", "config", "action 'x'", "setup"):
        assert part in text
    wf = af.Workflow("w", services=["mail"]).step("s", lambda ctx: 1)
    with pytest.raises(af.DefinitionError, match="services"):
        wf.build()


def test_secret_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_KEY", "s3cr3t-value")
    svc = mail.with_config(host="smtp", port=25, api_key=af.Secret("MAIL_KEY"))
    assert "s3cr3t" not in repr(svc)
    wf = af.Workflow("w", services=[svc]).step("s", lambda ctx: 1)
    assert "s3cr3t" not in str(wf.build().to_dict())


def test_steps_call_actions_set_up_once_per_worker(
    make_engine: Callable[..., af.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAIL_KEY", "k" * 12)
    svc = mail.with_config(host="smtp.local", port=2525, api_key=af.Secret("MAIL_KEY"))
    engine = make_engine(workers=2)
    (
        engine.define("notify", services=[svc]).for_each(
            "send",
            items=lambda ctx: [f"user{i}@x" for i in range(30)],
            body=lambda ctx: ctx.services.mail.send(ctx.item),
        )
    )
    (engine.define("missing").step("s", lambda ctx: ctx.services.sms.send("x")))
    with engine:
        out = engine.trigger("notify").result(timeout=60)
        assert [o["to"] for o in out] == [f"user{i}@x" for i in range(30)]
        assert {o["via"] for o in out} == {"smtp.local:2525"}
        assert {o["key_len"] for o in out} == {12}
        # One client per worker process, reused by every step there.
        per_pid: dict[int, set[int]] = {}
        for o in out:
            per_pid.setdefault(o["pid"], set()).add(o["setup_id"])
        assert all(len(ids) == 1 for ids in per_pid.values())
        assert max(o["sent_by_this_client"] for o in out) > 1
        with pytest.raises(af.StepFailed, match="has no service 'sms'"):
            engine.trigger("missing").result(timeout=30)


# -- circuit breakers on service actions -------------------------------------------------------


def _charge(client: Any, log: str, amount: int) -> str:
    """A payment API that is down while ``client.down`` exists; one log line per real call."""
    with open(log, "a") as f:
        f.write(f"call {os.getpid()}\n")
    if os.path.exists(client.down):
        raise ConnectionError("payment API unavailable")
    return f"charged {amount}"


def _calls(log: str) -> int:
    return len(open(log).read().splitlines()) if os.path.exists(log) else 0


def test_a_service_breaker_stops_calls_in_worker_processes(
    make_engine: Callable[..., af.Engine], tmp_path: Any
) -> None:
    breaker = af.CircuitBreaker(failure_threshold=2, reset_timeout="1h", name="payments")
    pay = af.define_service(
        "pay",
        config={"down": str},
        actions={"charge": _charge, "ping": lambda client: "pong"},
        setup=lambda cfg: cfg,
        breaker={"charge": breaker},
    )
    down, log = tmp_path / "down", str(tmp_path / "calls.log")
    down.touch()
    engine = make_engine(workers=2)
    engine.define("checkout", services=[pay.with_config(down=str(down))]).step(
        "charge",
        lambda ctx: ctx.services.pay.charge(ctx.payload["log"], 5),
        retry=af.Retry(attempts=4, delay="20ms"),
    )
    engine.define("health", services=[pay.with_config(down=str(down))]).step(
        "ping", lambda ctx: ctx.services.pay.ping()
    )
    with engine:
        with pytest.raises(af.StepFailed) as failed:
            engine.trigger("checkout", {"log": log}).result(timeout=60)
        # Two real calls failed and opened the circuit; the other attempts never called.
        assert _calls(log) == 2
        assert "CircuitOpen" in str(failed.value) and "its circuit is open" in str(failed.value)
        stats = engine.statistics()["breakers"]["payments"]
        assert stats["state"] == "open" and stats["rejected"] == 2 and stats["opened"] == 1
        assert engine.trigger("health", {}).result(timeout=30) == "pong"  # unguarded action


def test_a_service_breaker_half_opens_on_the_test_clock(
    workflow_test: Callable[..., Any], tmp_path: Any
) -> None:
    breaker = af.CircuitBreaker(failure_threshold=2, reset_timeout="5m", name="payments-test")
    pay = af.define_service(
        "pay", config={"down": str}, actions={"charge": _charge}, breaker=breaker
    )
    down, log = tmp_path / "down", str(tmp_path / "calls.log")
    down.touch()
    engine = af.Engine(store="memory")
    wf = engine.define("checkout", services=[pay.with_config(down=str(down))]).step(
        "charge",
        lambda ctx: ctx.services.pay.charge(ctx.payload["log"], 7),
        retry=af.Retry(attempts=10, delay="1m", backoff="fixed"),
    )
    t = workflow_test(wf).start({"log": log})
    assert _calls(log) == 1  # the first attempt failed; its retry waits a minute
    t.advance("1m")
    assert _calls(log) == 2 and breaker.state == "open"
    for _ in range(3):  # attempts 3-5, a minute apart, fail fast: the circuit is open
        t.advance("1m")
    assert _calls(log) == 2 and breaker.rejected == 3
    down.unlink()  # the API is back: once the 5 minutes pass, a trial call goes through
    t.finish()
    t.expect_output("charged 7")
    assert _calls(log) == 3 and breaker.state == "closed" and breaker.rejected == 4
    assert t.elapsed == 6 * 60  # the trial was the first attempt after the reset timeout


def test_bad_breaker_settings_are_named() -> None:
    with pytest.raises(af.DefinitionError, match=r"breaker\['refund'\]: no such action"):
        af.define_service(
            "pay", actions={"charge": _charge}, breaker={"refund": af.CircuitBreaker()}
        )
    with pytest.raises(af.DefinitionError, match=r"breaker: expected af\.CircuitBreaker"):
        af.define_service("pay", actions={"charge": _charge}, breaker=3)
