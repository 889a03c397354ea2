"""Browser tests: Debian's Chromium through the async Playwright API, daphne and the emulator as
real processes (environment.md §7)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from bench.stack import Daphne

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
]
E2E_USER = "e2e-user"
E2E_PASSWORD = "e2e-password-123"


def e2e_daphne(env: dict[str, str], log_dir: Path) -> Daphne:
    """The example project under daphne (``bench.stack.Daphne``), in asyncio debug mode when
    the tests run in it, logging to ``log_dir``."""
    return Daphne(env, log_dir / "daphne.log", devmode=True)


def own_run(run_id: str, user: Any) -> None:
    """Record ``user`` as the owner of ``run_id``: the example project lets only a run's owner
    watch and answer it. Written from a thread, so it is safe inside async tests."""

    def create() -> None:
        from django.db import connection

        from example_project.models import AiRun

        try:
            AiRun.objects.get_or_create(run_id=run_id, defaults={"owner_id": user.pk})
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(create).result()


class OwnedRunsEmulator:
    """The session emulator, except that runs a test triggers belong to its ``e2e_user``."""

    def __init__(self, emulator: Any, request: pytest.FixtureRequest) -> None:
        self._emulator = emulator
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._emulator, name)

    def trigger(self, *args: Any, **kwargs: Any) -> tuple[str, str]:
        run_id, token = self._emulator.trigger(*args, **kwargs)
        own_run(run_id, self._request.getfixturevalue("e2e_user"))
        return run_id, token


@pytest.fixture
def emulator(emulator: Any, request: pytest.FixtureRequest) -> Any:
    return OwnedRunsEmulator(emulator, request)


@pytest.fixture
def daphne_server(transactional_db: Any, emulator: Any, tmp_path: Path) -> Iterator[Daphne]:
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DB_NAME": str(connection.settings_dict["NAME"]),
        "TRIGGER_API_URL": emulator.url,
        "TRIGGER_SECRET_KEY": emulator.secret_key,
        "PYTHONUNBUFFERED": "1",
    }
    server = e2e_daphne(env, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def e2e_user(transactional_db: Any, django_user_model: Any) -> Any:
    from django.contrib.auth.hashers import make_password

    user = django_user_model.objects.create_user(E2E_USER)
    # Hashed with the example project's default hasher (not the tests' fast MD5), so daphne,
    # which runs example_project.settings, can check it on the login page.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        user.password = make_password(E2E_PASSWORD)
    user.save(update_fields=["password"])
    return user


@pytest.fixture
def session_cookie(e2e_user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(e2e_user)
    name = settings.SESSION_COOKIE_NAME
    return {"name": name, "value": client.cookies[name].value}


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


# Records, page-side, every state change, the viewer's text after every applied batch, every
# chunk (`trigger:data`), completion and Content Security Policy violation.
RECORDER = """
window.__viewer = {states: [], texts: [], errors: [], chunks: [], completes: [], violations: []};
document.addEventListener("trigger:state", (e) => {
  if (!e.target.matches("[data-trigger-stream]")) return;  // not the run badge or form
  window.__viewer.states.push(e.detail.previous + ">" + e.detail.state);
});
document.addEventListener("trigger:parts", (e) => {
  window.__viewer.texts.push(e.target.querySelector("[data-trigger-output]").textContent);
});
document.addEventListener("trigger:error", (e) => {
  if (e.target.matches("[data-trigger-stream]")) window.__viewer.errors.push(e.detail);
});
document.addEventListener("trigger:data", (e) => window.__viewer.chunks.push(e.detail.chunk));
document.addEventListener("trigger:complete", (e) => {
  if (e.target.matches("[data-trigger-stream]")) window.__viewer.completes.push(e.detail);
});
document.addEventListener("securitypolicyviolation", (e) => {
  window.__viewer.violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
async def page(browser: Any, daphne_server: Daphne, session_cookie: dict[str, str]) -> Any:
    context = await browser.new_context(viewport={"width": 960, "height": 720})
    await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
    await context.add_init_script(RECORDER)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


AXE_SOURCE = ROOT / "tests" / "conformance" / "node_modules" / "axe-core" / "axe.min.js"


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now: ``[{id, impact, help, targets}]``.

    axe (from npm, tests/conformance) is evaluated through Playwright rather than added as a
    script tag: the example project's strict CSP would block an inline script, and it does not
    govern what the DevTools protocol evaluates."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(AXE_SOURCE.read_text())
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => {
          const results = await window.axe.run(document, {resultTypes: ["violations"]});
          return results.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            targets: v.nodes.map((node) => node.target.join(" ")),
          }));
        }"""
    )
    return violations


def worker_env(emulator: Any, redis_url: str, settings_module: str) -> dict[str, str]:
    """The environment of a daphne worker of the example project on the test database, the
    emulator and a Redis channel layer."""
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DJANGO_DB_NAME": str(connection.settings_dict["NAME"]),
        "TRIGGER_API_URL": emulator.url,
        "TRIGGER_SECRET_KEY": emulator.secret_key,
        "PYTHONUNBUFFERED": "1",
        "REDIS_URL": redis_url,
    }


@contextlib.contextmanager
def daphne_workers(env: dict[str, str], tmp_path: Path, count: int = 2) -> Iterator[list[Daphne]]:
    """``count`` daphne processes with ``env``, each logging to its own directory."""
    workers: list[Daphne] = []
    try:
        for n in range(1, count + 1):
            log_dir = tmp_path / f"worker-{n}"
            log_dir.mkdir()
            workers.append(e2e_daphne(dict(env), log_dir))
            workers[-1].start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
