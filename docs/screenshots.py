"""Take the dashboard screenshots in docs/images/ (``python docs/screenshots.py``).

Starts an engine on a temporary store with a few runs (one waiting for approval, one failed,
one child run), serves it on loopback and drives Debian's chromium through Playwright, as
the browser tests do: the runs list, a run, an approval, a failure, a code workflow's run
with its signal, query and update form, the workflows and schedules page, and the approvals
inbox.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import actorflow as af  # noqa: E402

OUT = Path(__file__).parent / "images"


def boom(ctx: af.StepContext) -> None:
    raise ConnectionError("the payment API timed out")


def main() -> None:
    data = tempfile.mkdtemp()
    engine = af.Engine(data_dir=data, workers=2)
    engine.define("ship").step("label", lambda ctx: "DHL")
    (
        engine.define("orders", description="Orders from the shop")
        .on_webhook("/hooks/orders")
        .step("validate", lambda ctx: ctx.payload)
        .if_("big", lambda ctx: ctx.last["amount"] > 100)
        .human_in_the_loop("approve", description="Approve a big order")
        .endif()
        .for_each("lines", lambda ctx: list(range(8)), lambda item, ctx: time.sleep(0.02) or item)
        .parallel("notify", {"email": lambda ctx: "sent", "crm": lambda ctx: "ok"})
        .subflow("ship", "ship")
        .step("done", lambda ctx: "done")
    )
    engine.define("payments").step("charge", boom, retry=af.Retry(attempts=2, delay="50ms"))

    @engine.workflow("cart", description="A shopping cart (a code workflow)")
    async def cart(ctx: af.WorkflowContext, start: dict) -> dict:
        items = [await ctx.step("price", str.upper, item) for item in start["items"]]

        def add(item: str) -> int:
            """Add an item to the cart."""
            items.append(item)
            return len(items)

        ctx.on_query("count", lambda: len(items))
        ctx.on_update("add", add)
        ctx.on_signal("coupon", lambda code: items.append(f"coupon:{code}"))
        await ctx.wait_for_signal("checkout")
        return {"items": items}

    engine.define("report", description="The nightly report").on_schedule("0 3 * * *").step(
        "write", lambda ctx: "written"
    )
    with engine:
        for amount in (20, 40, 60):
            engine.trigger("orders", {"amount": amount}, idempotency_key=f"order-{amount}").result(
                timeout=60
            )
        waiting = engine.trigger("orders", {"amount": 500})
        failed = engine.trigger("payments", {"order": "A-7"})
        try:
            failed.result(timeout=60)
        except af.StepFailed:
            pass
        done = engine.runs("orders", status="completed", limit=1)[0]
        shopping = engine.trigger("cart", {"items": ["tea", "milk"]})
        while not shopping.query("__actorflow_handlers")["queries"]:  # its handlers are set
            time.sleep(0.05)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                engine.asgi(),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        chromium = os.environ.get("ACTORFLOW_CHROMIUM") or shutil.which("chromium")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for name, path, ready in (
                ("runs", "/#/", "tr.run-row"),
                ("run", f"/#/run/{done.id}", "#timeline"),
                ("approval", f"/#/run/{waiting.id}", ".approval"),
                ("failed", f"/#/run/{failed.id}", ".error-card"),
                ("code", f"/#/run/{shopping.id}", "#handler-names option"),
                ("workflows", "/#/workflows", "#schedules"),
                ("approvals", "/#/approvals", ".approval-item"),
            ):
                page.goto(url + path)
                page.wait_for_selector(ready, state="attached")
                page.wait_for_timeout(300)  # the page's second fetches (history, approvals)
                if name == "code":  # an update sent from the form, and its result
                    page.select_option("#interact-form select[name=kind]", "update")
                    page.fill("#interact-form [name=handler]", "add")
                    page.fill("#interact-form [name=body]", '"bread"')
                    page.click("#interact-form button[type=submit]")
                    page.wait_for_selector("#interact-result:not([hidden])")
                    page.wait_for_selector("#history tr.ev-update_received")
                page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=True)
            browser.close()
        server.should_exit = True
    shutil.rmtree(data, ignore_errors=True)
    print("written to", OUT)


if __name__ == "__main__":
    main()
