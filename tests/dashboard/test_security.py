"""The dashboard's guards: token, login cookie, CSRF, Host header, headers, no passwords."""

from __future__ import annotations

import html
import re

import pytest

from omniq import MemoryTaskQueue, Task, TaskStatus
from omniq.dashboard.security import Guard, host_name, safe_next
from omniq.dashboard.server import default_allowed_hosts
from tests.conftest import POSTGRES_DSN, require_server
from tests.dashboard import tasks
from tests.dashboard.helpers import client, csrf_of, post_form

TOKEN = "correct-horse-battery-staple"


async def test_without_the_token_pages_redirect_to_login_and_actions_are_refused() -> None:
    async with MemoryTaskQueue() as queue, client(queue, token=TOKEN) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
        for path in ("/", "/tasks?status=failed", f"/tasks/{task_id}", "/queues/default/purge"):
            response = await http.get(path)
            assert response.status_code == 303, path
            location = response.headers["location"]
            assert location.startswith("/login?next=")
        assert (await http.get("/tasks?status=failed")).headers["location"] == (
            "/login?next=%2Ftasks%3Fstatus%3Dfailed")
        refused = await http.post(f"/tasks/{task_id}/cancel", data={"csrf": "x"})
        assert refused.status_code == 303 and refused.headers["location"] == "/login"
        wrong = await http.post(f"/tasks/{task_id}/cancel",
                                headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await queue.get_task(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
        # What an anonymous visitor sees says nothing about the backend.
        login = (await http.get("/login")).text
        assert "MemoryTaskQueue" not in login and "Log in" in login


async def test_bearer_token_opens_pages_and_actions_without_csrf() -> None:
    async with MemoryTaskQueue() as queue, client(queue, token=TOKEN) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
        wrong = await http.get("/", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        good = {"authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/", headers=good)).status_code == 200
        # A script with the token needs no CSRF token: other sites cannot send the header.
        response = await http.post(f"/tasks/{task_id}/cancel", headers=good)
        assert response.status_code == 303
        assert (await queue.get_task(task_id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


async def test_login_form_sets_an_httponly_session_cookie_and_logout_clears_it() -> None:
    async with MemoryTaskQueue() as queue, client(queue, token=TOKEN) as http:
        form = (await http.get("/login?next=/tasks")).text
        bad = await http.post("/login", data={"csrf": csrf_of(form), "token": "guess",
                                              "next": "/tasks"})
        assert bad.status_code == 401 and "That token is not right." in bad.text
        assert "omniq_session" not in http.cookies

        ok = await http.post("/login", data={"csrf": csrf_of(form), "token": TOKEN,
                                             "next": "/tasks"})
        assert ok.status_code == 303 and ok.headers["location"] == "/tasks"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith("omniq_session=") and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower() and TOKEN not in cookie
        page = await http.get("/tasks")
        assert page.status_code == 200 and "Log out" in page.text

        out = await post_form(http, "/", "/logout")
        assert out.headers["location"] == "/login"
        assert (await http.get("/")).status_code == 303


async def test_login_refuses_a_form_without_its_csrf_token() -> None:
    async with MemoryTaskQueue() as queue, client(queue, token=TOKEN) as http:
        await http.get("/login")
        response = await http.post("/login", data={"token": TOKEN, "csrf": "forged"})
        assert response.status_code == 403 and "omniq_session" not in http.cookies


async def test_forms_without_a_valid_csrf_token_or_from_another_origin_change_nothing() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
        page = (await http.get("/")).text
        token = csrf_of(page)
        attempts = [
            ({}, {}),  # no token at all
            ({"csrf": "0" * 64}, {}),  # a made-up one
            ({"csrf": token}, {"origin": "http://evil.example"}),  # right token, wrong site
        ]
        for data, headers in attempts:
            response = await http.post(f"/tasks/{task_id}/cancel", data=data, headers=headers)
            assert response.status_code == 403, (data, headers)
            assert "reload the page" in html.unescape(response.text)
        # A token is bound to its browser's cookie: another browser's token does not fit.
        http.cookies.set("omniq_csrf", "someone-else", domain="127.0.0.1")
        response = await http.post(f"/tasks/{task_id}/cancel", data={"csrf": token})
        assert response.status_code == 403
        assert (await queue.get_task(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]

        fresh = await post_form(http, "/", f"/tasks/{task_id}/cancel",
                                next="/tasks")
        assert fresh.status_code == 303
        assert (await queue.get_task(task_id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


async def test_actions_must_be_posts() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
        assert (await http.get(f"/tasks/{task_id}/cancel")).status_code == 405
        assert (await http.get("/queues/default/pause")).status_code == 405
        assert (await queue.get_task(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]


async def test_redirects_never_leave_the_dashboard() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            response = await post_form(http, "/", f"/tasks/{task_id}/pause", next=target)
            assert response.headers["location"] == f"/tasks/{task_id}", target
    assert safe_next("/tasks?status=failed") == "/tasks?status=failed"
    assert safe_next("/x\r\nSet-Cookie: a=b") == "/"


async def test_host_header_is_checked_against_dns_rebinding() -> None:
    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "::1"]
    assert default_allowed_hosts("127.0.0.2") == ["127.0.0.1", "localhost", "::1", "127.0.0.2"]
    assert default_allowed_hosts("0.0.0.0") is None
    assert [host_name(h) for h in ("LocalHost:8080", "[::1]:80", "127.0.0.1")] == [
        "localhost", "::1", "127.0.0.1"]
    async with MemoryTaskQueue() as queue, client(queue, allowed_hosts=["127.0.0.1"]) as http:
        response = await http.get("/", headers={"host": "attacker.example:8080"})
        assert response.status_code == 400 and response.text == "Invalid host header"
        assert (await http.get("/", headers={"host": "127.0.0.1:8080"})).status_code == 200


async def test_every_response_carries_the_security_headers() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        for path in ("/", "/tasks", "/nowhere"):
            response = await http.get(path)
            policy = response.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
            assert "script-src" not in policy  # no scripts allowed at all
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in (await http.get("/")).text


def test_guard_sessions_expire_and_are_bound_to_the_token() -> None:
    guard = Guard(TOKEN)
    session = guard.new_session(now=1000.0)
    assert guard.session_ok(session, now=1000.0 + 3600)
    assert not guard.session_ok(session, now=1000.0 + 13 * 3600)  # 12 hours
    assert not Guard("another-token").session_ok(session, now=1000.0)
    expires, _, signature = session.partition(".")
    assert not guard.session_ok(f"{int(expires) + 10**6}.{signature}", now=1000.0)
    with pytest.raises(ValueError, match="must not be empty"):
        Guard("  ")


async def test_a_dsn_password_never_appears_on_a_page() -> None:
    require_server("postgres")
    from omniq.queue.postgres import PostgreSQLTaskQueue

    secret = "s3cret-Pa55"
    # The test server trusts loopback, so the password is carried but not needed.
    dsn = re.sub(r"^postgresql://([^@/]+)@", rf"postgresql://\1:{secret}@", POSTGRES_DSN)
    assert secret in dsn
    from tests.conftest import new_namespace

    queue = PostgreSQLTaskQueue(dsn, namespace=new_namespace())
    async with queue:
        try:
            task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,)))
            async with client(queue) as http:
                for path in ("/", "/tasks", f"/tasks/{task_id}", "/queues/default/purge"):
                    page = (await http.get(path)).text
                    assert secret not in page, path
                    assert "PostgreSQLTaskQueue(" in page
        finally:
            await queue.drop_namespace()
