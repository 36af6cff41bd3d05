"""Re-running a past run with overrides, as cronflow's replay (issue 24.7):
``engine.retry(run_id, payload=, mock_steps=)``: a new run of the workflow, from the start,
with another payload and steps answered without running (recorded as ``mocked``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import steps

MakeEngine = Callable[..., af.Engine]


def lines(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


async def checkout(ctx: af.WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    price = await ctx.step("price", lambda o: o["qty"] * 10, order)
    charged = await ctx.step("charge", charge_card, order, price)
    return {"price": price, "charged": charged}


def charge_card(order: dict[str, Any], price: int) -> str:
    if order.get("card") == "expired":
        raise ValueError("card expired")
    return f"charged {price}"


def test_a_graph_run_again_with_a_new_payload_and_a_mocked_step(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    engine.define("pay").step("charge", steps.fail_if_asked).step("next", steps.add_one)
    with engine:
        failed = engine.trigger("pay", {"log": str(log), "fail": True})
        with pytest.raises(af.StepFailed):
            failed.result(timeout=60)
        # As it was: the same payload fails the same way.
        again = engine.retry(failed.id)
        with pytest.raises(af.StepFailed):
            again.result(timeout=60)
        # A new payload: it runs.
        fixed = engine.retry(failed.id, payload={"log": str(log), "n": 5})
        assert fixed.result(timeout=60) == 2
        # The failing step mocked: it does not run, the rest does with its output.
        mocked = engine.retry(failed.id, mock_steps={"charge": 41})
        assert mocked.result(timeout=60) == 42
        charge = mocked.inspect().step("charge")
        assert charge.status == af.StepStatus.SUCCEEDED and charge.output == "41"
        assert [a.kind for a in charge.attempts] == ["mocked"]
        # A completed run may be run again with overrides (not as it was).
        with pytest.raises(af.ClientError, match="only a failed or cancelled run"):
            engine.retry(fixed.id)
        assert engine.retry(fixed.id, mock_steps={"charge": 9}).result(timeout=60) == 10
        with pytest.raises(af.ClientError, match=r"\['chrage'\] name no step of workflow 'pay'"):
            engine.retry(failed.id, mock_steps={"chrage": 1})
        with pytest.raises(af.ClientError, match="expected a JSON value"):
            engine.retry(failed.id, mock_steps={"charge": object()})
    # charge ran for the failure, the retry as it was and the new payload; never when mocked.
    assert lines(log) == ["charge", "charge", "charge", "next", "next", "next"]


def test_a_code_run_again_with_a_mocked_step(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.workflow("checkout")(checkout)
    with engine:
        failed = engine.trigger("checkout", {"qty": 2, "card": "expired"})
        with pytest.raises(af.StepFailed, match="card expired"):
            failed.result(timeout=60)
        mocked = engine.retry(failed.id, mock_steps={"charge": "charged by hand"})
        assert mocked.result(timeout=60) == {"price": 20, "charged": "charged by hand"}
        assert [a.kind for a in mocked.inspect().step("charge").attempts] == ["mocked"]
        assert [a.kind for a in mocked.inspect().step("price").attempts] == [None]
        other = engine.retry(failed.id, payload={"qty": 3})
        assert other.result(timeout=60) == {"price": 30, "charged": "charged 30"}
