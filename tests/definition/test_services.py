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
