"""Webhooks, approvals, events, state and services: an order flow driven over HTTP.

Run it with ``python examples/triggers.py``. It serves the engine's ASGI app with uvicorn on
127.0.0.1, posts two signed orders to the webhook, approves the big one through the REST API,
publishes the shipping events (one before its run even waits for it), and prints what happened.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import threading
import time
import urllib.request
from typing import Any

import uvicorn

import actorflow as af

os.environ.setdefault("ORDERS_SECRET", "change-me")
os.environ.setdefault("BILLING_KEY", "sk_test_123")

engine = af.Engine(data_dir=os.environ.get("TRIGGERS_DATA_DIR", ".actorflow-triggers"))
tokens: list[str] = []


class Billing:
    """A stand-in for a payment SDK client: built once per worker process."""

    def __init__(self, config: Any) -> None:
        self.currency = config.currency
        self.key = config.api_key  # read from $BILLING_KEY, never logged

    def charge(self, order: str, amount: float) -> str:
        return f"charged {amount:.2f} {self.currency} for {order}"


billing = af.define_service(
    "billing",
    config={"currency": str, "api_key": str},
    actions={"charge": lambda client, order, amount: client.charge(order, amount)},
    setup=Billing,
)


def validate(ctx: af.StepContext) -> dict[str, Any]:
    # Persistent state: how many orders each customer placed, across runs and restarts.
    count = ctx.state.incr(f"orders:{ctx.payload['customer']}")
    return {**ctx.payload, "nth_order": count}


def notify(token: str, ctx: af.StepContext) -> None:
    tokens.append(token)  # a real service would e-mail a link carrying the token


(
    engine.define(
        "orders",
        services=[billing.with_config(currency="EUR", api_key=af.Secret("BILLING_KEY"))],
        concurrency=10,
        rate_limit="100/s",
    )
    .on_webhook(
        "/orders",
        secret_env="ORDERS_SECRET",
        schema={
            "type": "object",
            "required": ["order", "customer", "amount"],
            "properties": {"amount": {"type": "number", "minimum": 0}},
        },
    )
    .step("validate", validate)
    .if_("big", lambda ctx: ctx.last["amount"] > 100)
    .human_in_the_loop("approve", timeout="1h", description="Approve a big order", on_pause=notify)
    .endif()
    .step(
        "charge",
        lambda ctx: ctx.services.billing.charge(ctx.payload["order"], ctx.payload["amount"]),
    )
    .wait_for_event("parcel.shipped", key=lambda ctx: ctx.payload["order"], timeout="1h")
    .step("done", lambda ctx: f"{ctx.steps['charge'].output}; shipped by {ctx.last['carrier']}")
)
engine.define("nightly").step("report", lambda ctx: ctx.payload["scheduled_at"]).on_schedule(
    "0 2 * * *", tz="Europe/Berlin"
)


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode()
    # JSON, said so: the API refuses other bodies (a web page's form could send those).
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def signed(body: dict[str, Any]) -> dict[str, str]:
    secret = os.environ["ORDERS_SECRET"].encode()
    digest = hmac.new(secret, json.dumps(body).encode(), hashlib.sha256).hexdigest()
    return {"X-Signature": "sha256=" + digest}


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(engine.asgi(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        small = {"order": "A-1", "customer": "ada", "amount": 40}
        big = {"order": "A-2", "customer": "ada", "amount": 900}
        # Shipped before its run waits for it: the keyed event is kept until then.
        post(f"{base}/api/events/parcel.shipped", {"payload": {"carrier": "DHL"}, "key": "A-1"})
        first = post(f"{base}/orders", small, signed(small))["run_id"]
        second = post(f"{base}/orders", big, signed(big))["run_id"]
        print("small order:", engine.run(first).result(timeout=60))
        while not tokens:
            time.sleep(0.01)
        post(f"{base}/api/approvals/{tokens[0]}/resume", {"approved_by": "grace"})
        # Delivered now if the run already waits, else kept for it: either way it is taken.
        engine.publish("parcel.shipped", {"carrier": "UPS"}, key="A-2")
        print("big order:", engine.run(second).result(timeout=60))
        approval = engine.approvals(status="resumed")[0]
        print(
            "approved by:",
            engine.inspect(second).steps[1].output,
            "| token used:",
            approval["status"],
        )
        print("orders by ada:", engine.state.of("orders").get("orders:ada"))
        print("nightly report next at:", time.strftime(
            "%Y-%m-%d %H:%M UTC", time.gmtime(engine.schedules()[0]["next"])))  # fmt: skip
    finally:
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
