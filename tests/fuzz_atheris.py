"""Coverage-guided fuzzing (atheris, libFuzzer) of what parses outside input.

Usage: python tests/fuzz_atheris.py TARGET -runs=N [-seed=S]
Targets: duration, cron, webhook, schema. Each input may be refused only with the
documented error (a ValueError or DefinitionError whose message names the field, or the
HTTP error the app answers with); anything else is a crash that libFuzzer reports (exit != 0).
``tests/test_bad_input.py`` runs each target for a bounded number of inputs.
"""

from __future__ import annotations

import os
import sys
import time

import atheris

with atheris.instrument_imports():
    from actorflow.definition._options import parse_duration
    from actorflow.definition._triggers import WebhookSpec, check_schedule, validate_payload
    from actorflow.errors import DefinitionError
    from actorflow.triggers._requests import _HttpError, _parse
    from actorflow.triggers._webhooks import check_signature

os.environ["FUZZ_SECRET"] = "fuzz-secret"
SCHEMA = {
    "type": "object",
    "required": ["order", "amount"],
    "properties": {"order": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
}
HOOKS = [
    WebhookSpec("/h", "POST", "FUZZ_SECRET", kind, None)
    for kind in ("hmac-sha256", "github", "stripe")
]


def duration(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    value = fdp.PickValueInList(
        [fdp.ConsumeUnicodeNoSurrogates(16), fdp.ConsumeFloat(), fdp.ConsumeInt(8)]
    )
    try:
        seconds = parse_duration(value, "timeout")
    except DefinitionError as exc:
        assert "timeout" in str(exc), exc
        return
    assert seconds > 0 and seconds != float("inf"), (value, seconds)


def cron(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    expr, tz = fdp.ConsumeUnicodeNoSurrogates(40), fdp.ConsumeUnicodeNoSurrogates(20)
    problems: list[str] = []
    check_schedule(expr, None, tz, "skip", "none", problems)
    for p in problems:
        assert "cron" in p or "tz" in p, p


def webhook(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    spec = HOOKS[fdp.ConsumeIntInRange(0, len(HOOKS) - 1)]
    headers = {
        name: fdp.ConsumeUnicodeNoSurrogates(90)
        for name in ("x-signature", "x-hub-signature-256", "stripe-signature")
        if fdp.ConsumeBool()
    }
    body = fdp.ConsumeBytes(200)
    try:
        check_signature(spec, headers, body, time.time())
    except _HttpError as exc:
        assert exc.status == 401 and exc.detail, exc
        return
    raise AssertionError(f"an unsigned body was accepted: {headers!r}")


def schema(data: bytes) -> None:
    try:
        body = _parse(data)
    except _HttpError as exc:
        assert exc.status == 400, exc
        return
    try:
        validate_payload(SCHEMA, body)
    except ValueError as exc:
        assert str(exc), exc


TARGETS = {"duration": duration, "cron": cron, "webhook": webhook, "schema": schema}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
