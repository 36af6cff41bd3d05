"""Cross-site requests and DNS rebinding, against a real uvicorn server on 127.0.0.1.

A state-changing API request must be JSON (or carry ``X-Actorflow-Client``), must not come
from another origin, and must name a Host the server answers to; webhooks stay callable by
their signers from anywhere. After each refusal the engine still serves, and nothing it
acknowledged is lost: the paused run is still paused, every accepted run is recorded.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

import actorflow as af
from tests.conftest import wait_until
from tests.serving import SECRET, serve, sign
from tests.triggers.webhook_app import define

ALLOWED = "engine.example"  # the name a reverse proxy would forward


class Site:
    """An engine served on loopback, a client for it, and the runs it acknowledged."""

    def __init__(self, engine: af.Engine, client: httpx.Client, url: str) -> None:
        self.engine = engine
        self.client = client
        self.url = url
        self.port = urlsplit(url).port
        self.acknowledged: list[str] = []
        r = client.post("/api/workflows/approve/trigger", json={"id": "p"})
        assert r.status_code == 202, r.text
        self.paused = r.json()["run_id"]
        wait_until(lambda: bool(engine.approvals(run_id=self.paused)))
        self.token = engine.approvals(run_id=self.paused)[0]["token"]

    def still_serving(self) -> None:
        """A JSON trigger is served to its end; nothing acknowledged before is lost."""
        n = len(self.acknowledged)
        r = self.client.post("/api/workflows/open/trigger", json={"n": n})
        assert r.status_code == 202, r.text
        self.acknowledged.append(r.json()["run_id"])
        assert self.engine.run(self.acknowledged[-1]).result(timeout=30) == {"n": n}
        recorded = {run.id for run in self.engine.runs("open", limit=None)}
        assert recorded == set(self.acknowledged)  # none lost, none started by a refusal
        assert self.engine.inspect(self.paused).status is af.RunStatus.RUNNING
        assert [a["token"] for a in self.engine.approvals(run_id=self.paused)] == [self.token]


@pytest.fixture
def site(make_engine: Callable[..., af.Engine]) -> Iterator[Site]:
    os.environ["TEST_HOOK_SECRET"] = SECRET.decode()
    engine = define(make_engine(workers=1))
    with (
        serve(engine.asgi(allowed_hosts=[ALLOWED])) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield Site(engine, client, url)


def _refused(r: httpx.Response, status: int, error: str, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == error, body
    for word in words:
        assert word in body["detail"], (word, body)


def test_form_and_text_bodies_cannot_cancel_or_trigger(site: Site) -> None:
    text = {"Content-Type": "text/plain;charset=UTF-8"}
    cancel = f"/api/runs/{site.paused}/cancel"
    trigger = "/api/workflows/open/trigger"
    cases: list[tuple[str, dict[str, Any]]] = [
        (cancel, {"data": {"reason": "csrf"}}),  # an HTML form (urlencoded)
        (cancel, {"content": b'{"reason": "csrf"}', "headers": text}),  # enctype=text/plain
        (cancel, {}),  # fetch(mode: "no-cors") with no body at all
        (trigger, {"data": {"n": "1"}}),
        (trigger, {"content": b'{"n": 1}', "headers": text}),
        (trigger, {"files": {"f": b"{}"}}),  # multipart/form-data
        (f"/api/approvals/{site.token}/resume", {"content": b"{}", "headers": text}),
        ("/api/events/paid", {"content": b'{"payload": 1, "key": "p"}', "headers": text}),
        (f"/api/runs/{site.paused}/retry", {}),
    ]
    for path, kwargs in cases:
        r = site.client.post(path, **kwargs)
        _refused(r, 415, "content_type", "application/json", "X-Actorflow-Client")
        site.still_serving()
    # A JSON content type (with parameters), or the dashboard's header, is what is accepted.
    r = site.client.post(
        trigger, content=b'{"n": 2}', headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert r.status_code == 202, r.text
    site.acknowledged.append(r.json()["run_id"])
    site.still_serving()
    r = site.client.post(trigger, headers={"Content-Type": "application/json"})  # no body
    assert r.status_code == 202, r.text  # an API body is optional: no payload, None
    assert site.engine.run(r.json()["run_id"]).result(timeout=30) is None
    site.acknowledged.append(r.json()["run_id"])
    r = site.client.post(cancel, headers={"X-Actorflow-Client": "dashboard"})  # no body
    assert r.status_code == 200 and r.json()["cancelled"] is True, r.text
    assert site.engine.inspect(site.paused).status is af.RunStatus.CANCELLED


def test_foreign_origins_and_cross_site_fetches_are_refused(site: Site) -> None:
    cancel = f"/api/runs/{site.paused}/cancel"
    foreign: list[dict[str, str]] = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed frames, file: pages, redirects
        {"Origin": f"http://localhost:{site.port}"},  # another name: another origin
        {"Origin": "http://127.0.0.1:1"},  # another port on this machine
        {"Origin": f"http://127.0.0.1.evil.example:{site.port}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling sub-domain is another origin too
        {"Origin": "https://evil.example", "X-Actorflow-Client": "dashboard"},
    ]
    for headers in foreign:
        for path in (cancel, "/api/workflows/open/trigger"):
            r = site.client.post(path, json={"reason": "csrf"}, headers=headers)
            _refused(r, 403, "cross_site", "another site")
        site.still_serving()
    # The dashboard's own requests: same origin.
    own = {"Origin": site.url, "Sec-Fetch-Site": "same-origin", "X-Actorflow-Client": "dashboard"}
    r = site.client.post("/api/workflows/open/trigger", json={"n": 9}, headers=own)
    assert r.status_code == 202, r.text
    site.acknowledged.append(r.json()["run_id"])
    # Behind a proxy: the page's origin is a configured name, whatever Host the proxy sends.
    for headers in (
        {"Origin": f"https://{ALLOWED}", "Host": ALLOWED},
        {"Origin": f"https://{ALLOWED}"},  # a proxy that forwards Host 127.0.0.1:<port>
        {"Origin": f"http://{ALLOWED}:8443", "Host": f"{ALLOWED}:8443"},
    ):
        r = site.client.post("/api/workflows/open/trigger", json={"n": 9}, headers=headers)
        assert r.status_code == 202, (headers, r.text)
        site.acknowledged.append(r.json()["run_id"])
    site.still_serving()


def test_cross_origin_reads_carry_no_cors_headers(site: Site) -> None:
    evil = {"Origin": "https://evil.example"}
    for path in ("/api/runs", f"/api/runs/{site.paused}", "/api/approvals", "/"):
        r = site.client.get(path, headers=evil)
        assert r.status_code == 200, r.text
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
    # A preflight is never granted, so a script on another site cannot send JSON at all.
    r = site.client.options(
        "/api/workflows/open/trigger",
        headers={
            **evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code >= 400 and "access-control-allow-origin" not in r.headers
    site.still_serving()


def test_a_foreign_host_is_refused(site: Site) -> None:
    """DNS rebinding: a page of evil.example, whose name now points at 127.0.0.1."""
    port = site.port
    for host in (
        "evil.example",
        f"evil.example:{port}",
        "localhost.evil.example",
        f"{ALLOWED}.evil.example",
        f"evil{ALLOWED}",
        "127.0.0.2",
        "[::2]",
        "a b",
    ):
        h = {"Host": host}
        for r in (
            site.client.get("/api/runs", headers=h),
            site.client.get("/", headers=h),
            site.client.get("/metrics", headers=h),
            site.client.post("/api/workflows/open/trigger", json={"n": -1}, headers=h),
            site.client.post(f"/api/runs/{site.paused}/cancel", json={}, headers=h),
        ):
            _refused(r, 400, "host", "allowed_hosts")
            assert host in r.json()["detail"]
        site.still_serving()
    for host in (
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        "LocalHost",
        f"[::1]:{port}",
        "[0:0:0:0:0:0:0:1]",
        ALLOWED,
        f"{ALLOWED}:443",
        "Engine.Example.",  # case and a trailing dot do not make another name
    ):
        h = {"Host": host}
        assert site.client.get("/api/runs", headers=h).status_code == 200, host
        r = site.client.post("/api/workflows/open/trigger", json={"n": 1}, headers=h)
        assert r.status_code == 202, (host, r.text)
        site.acknowledged.append(r.json()["run_id"])
    # Health checks answer under any name (orchestrators probe with their own).
    for path in ("/healthz", "/readyz"):
        assert site.client.get(path, headers={"Host": "10.1.2.3:8080"}).status_code == 200
    # A request without a Host header at all (HTTP/1.0).
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /api/runs HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"Host" in orjson.loads(body)["detail"].encode()
    site.still_serving()


def test_webhooks_stay_callable_by_their_signers_from_anywhere(site: Site) -> None:
    body = orjson.dumps({"order": "o-7", "amount": 7})
    anywhere = {
        "Host": "hooks.public.example",
        "Origin": "https://evil.example",
        "Sec-Fetch-Site": "cross-site",
        "Content-Type": "text/plain",
    }
    r = site.client.post(
        "/hooks/orders", content=body, headers={**anywhere, "X-Signature": sign(body)}
    )
    assert r.status_code == 202, r.text
    assert site.engine.run(r.json()["run_id"]).result(timeout=30) == {"order": "o-7", "amount": 7}
    # Their signature still guards them.
    r = site.client.post("/hooks/orders", content=body, headers={**anywhere, "X-Signature": "0"})
    _refused(r, 401, "signature", "does not match")
    assert len(site.engine.runs("orders")) == 1
    site.still_serving()


def test_allowed_hosts_settings(make_engine: Callable[..., af.Engine]) -> None:
    config = af.EngineConfig.from_sources(
        env={"ACTORFLOW_ALLOWED_HOSTS": " a.example, .b.example ,[::5]"}, pyproject=False
    )
    assert config.allowed_hosts == ("a.example", ".b.example", "[::5]")
    for bad in ("http://a.example", "a.example:80", "", "a b", "a/b", "[::1", "*.a.example"):
        with pytest.raises(af.ConfigError, match="allowed_hosts"):
            af.EngineConfig(allowed_hosts=(bad,))
    with pytest.raises(af.ConfigError, match="allowed_hosts"):
        af.EngineConfig(allowed_hosts="a.example")  # type: ignore[arg-type]
    from actorflow.cli._serve import load_app

    with pytest.raises(af.ClientError, match="--allowed-host"):  # not an engine: not ignored
        load_app("tests.serving:serve", allowed_hosts=["x.example"])
    engine = define(make_engine(workers=1, allowed_hosts=(".b.example",)))
    with pytest.raises(af.ConfigError, match="allowed_hosts"):
        engine.asgi(allowed_hosts=["x.example:8080"])
    with serve(engine.asgi(allowed_hosts=["c.example"])) as url, httpx.Client(base_url=url) as c:
        for host, status in (
            ("b.example", 200),  # a leading dot: the domain and its sub-domains
            ("api.b.example", 200),
            ("c.example", 200),  # the argument adds to the setting
            ("xb.example", 400),
            ("d.example", 400),
        ):
            assert c.get("/api/runs", headers={"Host": host}).status_code == status, host
    with serve(engine.asgi(allowed_hosts=["*"])) as url, httpx.Client(base_url=url) as c:
        assert c.get("/api/runs", headers={"Host": "anything.example"}).status_code == 200
        # "*" is about names, not origins: a foreign page is still refused.
        r = c.post("/api/workflows/open/trigger", json={}, headers={"Origin": "https://x.example"})
        _refused(r, 403, "cross_site")
