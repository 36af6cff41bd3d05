"""The run page's graph, timeline and live updates, in headless Chromium (issue 25).

- The graph of a nested workflow (an if inside a for_each inside a parallel), laid out by the
  vendored dagre: no edge segment crosses a node box other than its own two ends, the loop's
  body is drawn inside its group, names are not cut, and zoom and pan move the view.
- The timeline of a run whose approval has waited an hour (the browser's clock is moved an
  hour on): the short steps before it stay visible bars, the wait is collapsed to a break
  labelled with its length, and a linear axis has round ticks.
- Typing a resume payload while the run's events arrive: the text stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import actorflow as af
from tests.conftest import wait_until
from tests.dashboard.conftest import _page
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]

# Every segment of every edge path against every node box (shrunk by half a pixel) but the
# edge's own two ends: the segments that cross one (Liang-Barsky clipping).
_CROSSINGS = """() => {
  const svg = document.querySelector('#graph');
  const boxes = [...svg.querySelectorAll('g.node')].map((g) => {
    const [x, y, w, h] = g.dataset.box.split(',').map(Number);
    return { id: g.dataset.id, name: g.dataset.node, x: x + 0.5, y: y + 0.5, w: w - 1, h: h - 1 };
  });
  const hits = (a, b, r) => {
    let t0 = 0, t1 = 1;
    const dx = b[0] - a[0], dy = b[1] - a[1];
    const sides = [[-dx, a[0] - r.x], [dx, r.x + r.w - a[0]], [-dy, a[1] - r.y],
      [dy, r.y + r.h - a[1]]];
    for (const [p, q] of sides) {
      if (p === 0) { if (q < 0) return false; continue; }
      const t = q / p;
      if (p < 0) { if (t > t1) return false; if (t > t0) t0 = t; }
      else { if (t < t0) return false; if (t < t1) t1 = t; }
    }
    return t0 < t1;
  };
  const crossings = [];
  const edges = [...svg.querySelectorAll('path.edge')];
  for (const e of edges) {
    const pts = e.getAttribute('d').match(/-?[\\d.]+,-?[\\d.]+/g)
      .map((s) => s.split(',').map(Number));
    for (let i = 0; i + 1 < pts.length; i++) {
      for (const b of boxes) {
        if (b.id === e.dataset.from || b.id === e.dataset.to) continue;
        if (hits(pts[i], pts[i + 1], b)) {
          crossings.push(`${e.dataset.from}->${e.dataset.to} x ${b.name}`);
        }
      }
    }
  }
  return { crossings, nodes: boxes.length, edges: edges.length };
}"""


def _s(ctx: Any) -> int:
    return 1


def _nested(engine: af.Engine) -> None:
    def body(item: Any, flow: af.Flow) -> Any:
        return (
            flow.step("prepare_the_item_for_shipping", _s)
            .if_("even", lambda ctx: True)
            .step("double", _s)
            .else_()
            .step("keep", _s)
            .endif()
        )

    (
        engine.define("nested")
        .step("start", _s)
        .parallel(
            "fan",
            {
                "left": lambda flow: flow.for_each("items", lambda ctx: [1, 2, 3], body),
                "right": _s,
                "middle": lambda flow: flow.step("m1", _s).step("m2", _s),
            },
        )
        .step("finish", _s)
    )


def test_a_nested_graph_has_no_edge_through_a_node_box(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=2)
    _nested(engine)
    with engine, serve(engine.asgi()) as url:
        run = engine.trigger("nested", {})
        run.result(timeout=60)
        page = _page(browser, f"{url}/#/run/{run.id}")
        page.wait_for_selector("#graph g.node")
        found = page.evaluate(_CROSSINGS)
        assert found["crossings"] == [], found["crossings"]
        assert found["nodes"] == 11 and found["edges"] >= 14
        # The body hangs inside the loop's group: each body node's box within the group's.
        inside = page.evaluate("""() => {
          const g = document.querySelector('#graph g.group[data-group=items] rect').getBBox();
          return ['items', 'prepare_the_item_for_shipping', 'even', 'double', 'keep'].map((n) => {
            const b = document.querySelector(`#graph g.node[data-node=${n}] rect`).getBBox();
            return b.x >= g.x && b.y >= g.y && b.x + b.width <= g.x + g.width
              && b.y + b.height <= g.y + g.height;
          });
        }""")
        assert inside == [True] * 5
        outside = page.evaluate("""() => {
          const g = document.querySelector('#graph g.group[data-group=items] rect').getBBox();
          const b = document.querySelector('#graph g.node[data-node=finish] rect').getBBox();
          return b.y >= g.y + g.height;
        }""")
        assert outside  # what follows the loop is below its group, not beside its body
        name = page.locator("#graph g.node[data-node=prepare_the_item_for_shipping] tspan.name")
        assert name.text_content() == "prepare_the_item_for_shipping"  # not cut at 18
        statuses = {
            n.get_attribute("data-node"): n.get_attribute("data-status")
            for n in page.locator("#graph g.node").all()
        }
        assert statuses["double"] == "succeeded" and statuses["finish"] == "succeeded"
        # Pending is the same colour in the graph as in the steps table's badge.
        colours = page.evaluate("""() => {
          const badge = document.createElement('span');
          badge.className = 'badge s-pending';
          document.body.appendChild(badge);
          const g = document.createElementNS('http://www.w3.org/2000/svg', 'g');
          g.setAttribute('class', 'node st-pending');
          const r = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
          g.appendChild(r);
          document.querySelector('#graph g.viewport').appendChild(g);
          return [getComputedStyle(badge).backgroundColor, getComputedStyle(r).fill];
        }""")
        assert colours[0] == colours[1], colours
        # Zoom and pan change the view's transform; "fit" puts it back.
        viewport = page.locator("#graph g.viewport")
        fitted = viewport.get_attribute("transform")
        page.click(".zoom-in")
        zoomed = viewport.get_attribute("transform")
        assert zoomed != fitted and "scale(" in zoomed
        box = page.locator("#graph").bounding_box()
        page.mouse.move(box["x"] + 50, box["y"] + 50)
        page.mouse.down()
        page.mouse.move(box["x"] + 150, box["y"] + 90)
        page.mouse.up()
        assert viewport.get_attribute("transform") != zoomed
        page.click(".zoom-fit")
        assert viewport.get_attribute("transform") == fitted
        assert page.errors == []


def test_the_timeline_keeps_short_steps_visible_beside_an_hour_long_approval(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=2)
    (
        engine.define("signoff")
        .step("prep", lambda ctx: time.sleep(0.05))  # short steps: 50 ms beside an hour
        .step("check", lambda ctx: time.sleep(0.05))
        .human_in_the_loop("sign", description="Sign it off")
    )
    engine.define("warm").step("up", lambda ctx: 1)
    with engine, serve(engine.asgi()) as url:
        # The workers are up before the run starts: its time outside the wait is then its
        # steps' and hand-overs', not the pool's start (which a loaded machine stretches).
        engine.trigger("warm", {}).result(timeout=60)
        run = engine.trigger("signoff", {})
        wait_until(lambda: bool(engine.approvals(run_id=run.id)))
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        # The approval has waited an hour, as the page sees it.
        page.clock.install(time=time.time() + 3600)
        page.goto(f"{url}/#/run/{run.id}")
        page.wait_for_selector("#timeline rect.bar")

        def widths() -> dict[str, float]:
            bars = page.locator("#timeline rect.bar").all()
            return {b.get_attribute("data-step"): float(b.get_attribute("width")) for b in bars}

        def active_span() -> float:
            """Pixels from the first step's start to the last short step's end."""
            prep = page.locator("#timeline rect.bar[data-step=prep]")
            check = page.locator("#timeline rect.bar[data-step=check]")
            end = float(check.get_attribute("x")) + float(check.get_attribute("width"))
            return end - float(prep.get_attribute("x"))

        collapsed = widths()
        assert set(collapsed) == {"prep", "check", "sign"}
        # The wait takes a fixed break; the rest of the axis (about 720 px) is the run's time
        # outside it (its start, the steps, the hand-overs), mostly the steps' 100 ms.
        assert active_span() > 200, collapsed
        assert min(collapsed["prep"], collapsed["check"]) > 60, collapsed
        gap = page.locator("#timeline g.gap")
        assert gap.count() == 1
        assert 3500 < float(gap.get_attribute("data-seconds")) < 3700
        assert "1.0 h" in (gap.text_content() or "")
        page.check("input[name=tl-mode][value=linear]")
        page.wait_for_selector("#timeline[data-mode=linear]")
        linear = widths()
        assert active_span() < 6 and linear["sign"] > 600  # what collapsing avoids
        ticks = [t.text_content() or "" for t in page.locator("#timeline g.tick text").all()]
        assert ticks[0] == "0" and len(ticks) >= 4, ticks
        assert any(t.endswith("min") for t in ticks), ticks  # round steps: 10 min, 20 min...
        page.check("input[name=tl-mode][value=log]")
        page.wait_for_selector("#timeline[data-mode=log]")
        assert widths()["prep"] > 2.5  # a log scale spreads the first moments too
        # Zoom: with the wait collapsed, drag across the axis below the two short steps; they
        # then fill the axis.
        page.check("input[name=tl-mode][value=collapse]")
        page.wait_for_selector("#timeline[data-mode=collapse]")
        prep = page.locator("#timeline rect.bar[data-step=prep]").bounding_box()
        check = page.locator("#timeline rect.bar[data-step=check]").bounding_box()
        axis = page.locator("#timeline .brush-area").bounding_box()
        page.mouse.move(prep["x"] - 2, axis["y"] + 5)
        page.mouse.down()
        page.mouse.move(prep["x"] + 20, axis["y"] + 5)
        page.mouse.move(check["x"] + check["width"] + 2, axis["y"] + 5)
        page.mouse.up()
        page.wait_for_selector(".tl-reset:not([disabled])")
        assert active_span() > 600  # of the about 720 px the wait leaves
        assert page.locator("#timeline g.gap").count() == 0  # the wait is out of the window
        page.click(".tl-reset")
        page.wait_for_selector(".tl-reset[disabled]")
        assert page.errors == []


def test_typing_a_resume_payload_survives_live_updates(
    browser: Any, make_engine: MakeEngine, tmp_path: Any
) -> None:
    """Events of the run arrive while the user types: the page patches, the text stays."""
    engine = make_engine(workers=2)
    gate = tmp_path / "gate"

    def ticker(ctx: Any) -> int:
        for _ in range(400):
            if gate.exists():
                break
            time.sleep(0.01)
        return 1

    (
        engine.define("busy").parallel(
            "both",
            {
                "ask": lambda flow: flow.human_in_the_loop("approve", description="go?"),
                "work": lambda flow: flow.for_each(
                    "ticks", lambda ctx: list(range(6)), lambda i, c: ticker(c)
                ),
            },
        )
    )
    with engine, serve(engine.asgi()) as url:
        run = engine.trigger("busy", {})
        wait_until(lambda: bool(engine.approvals(run_id=run.id)))
        page = _page(browser, f"{url}/#/run/{run.id}")
        page.wait_for_selector(".approval .approval-payload")
        box = page.locator(".approval-payload")
        box.fill("")
        box.type('{"approved_by": "gr')
        # Marked: the same element must still be there at the end (not a new one).
        page.evaluate("document.querySelector('.approval-payload').dataset.mark = 'same'")
        gate.touch()  # the ticks finish: their events arrive while the user types
        wait_until(lambda: engine.inspect(run.id).step("ticks").status == af.StepStatus.SUCCEEDED)
        page.wait_for_function(
            "document.querySelector('#graph g.node[data-node=ticks]').dataset.status"
            " === 'succeeded'",
            timeout=30_000,
        )
        box.type('ace"}')
        assert box.input_value() == '{"approved_by": "grace"}'
        assert page.evaluate("document.querySelector('.approval-payload').dataset.mark") == "same"
        page.click(".approval .resume")
        run.result(timeout=60)
        assert engine.inspect(run.id).step("approve").output == '{"approved_by":"grace"}'
        page.wait_for_selector("h1 .s-completed", timeout=30_000)
        assert page.locator(".approval").count() == 0  # gone once resumed
        assert page.errors == []
