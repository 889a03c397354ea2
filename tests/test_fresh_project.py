"""The package as a new user gets it: the wheel in a fresh virtualenv, `django-admin
startproject`, the README's four installation steps, then a run triggered from a plain sync view
and its text seen in Chromium, and the docs' example tests run by the installed pytest plugin.

The snippets are read from README.md, docs/recipes.md and docs/testing.md (the code block after
each `<!-- fresh-project: write|append <path> -->` marker), so the docs cannot drift from the
package. Slow (a wheel build and a virtualenv): marked `slow`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.stack import DAPHNE_LISTENING
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".venv" / "bin" / "uv"
SECRET_KEY = "tr_dev_fresh_project_secret_key_0123456789abcdef"
USERNAME, PASSWORD = "ada", "fresh-project-password"
ANSWER = ["Hello", " from", " a", " fresh", " project"]
MARKER = re.compile(
    r"<!-- fresh-project: (write|append) (\S+) -->\s*\n\s*```\w*\n(.*?)\n\s*```", re.S
)

pytestmark = pytest.mark.slow


@dataclass
class Snippet:
    mode: str
    path: str
    code: str


def snippets(document: str) -> list[Snippet]:
    text = (ROOT / document).read_text()
    found = [
        Snippet(mode, path, textwrap.dedent(code) + "\n")
        for mode, path, code in MARKER.findall(text)
    ]
    assert found, f"no fresh-project snippets in {document}"
    return found


def apply(project: Path, snippet: Snippet) -> None:
    target = project / snippet.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if snippet.mode == "write":
        target.write_text(snippet.code)
    else:
        with target.open("a") as file:
            file.write("\n" + snippet.code)


def run(*args: Any, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@dataclass
class FreshProject:
    root: Path
    python: Path
    env: dict[str, str]


# The test's own parts of the project (its pages, its simulated task), not the README's.
ASK_HTML = """<!doctype html><html><head><title>Ask</title><link rel="icon" href="data:,">
</head><body>
<form method="post">{% csrf_token %}<input name="prompt"><button type="submit">Ask</button></form>
</body></html>
"""
WATCH_HTML = """{% load trigger_django %}<!doctype html><html><head><title>Watch</title>
<link rel="icon" href="data:,">{% trigger_django_script %}</head><body>
{% stream_viewer run_id "ai-output" timeout=2 %}
</body></html>
"""
EMULATED_TASKS = f"""
import asyncio

from trigger_django.emulator import register_task


@register_task("ai-writer")
async def ai_writer(ctx):
    for word in {ANSWER!r}:
        await ctx.stream("ai-output").append(word)
        await asyncio.sleep(0.05)
"""
PROJECT_EXTRAS = """
# The test's own additions: its app, templates, login page, pages and static files (daphne,
# unlike `runserver`, serves none).
INSTALLED_APPS += ["reports"]
TEMPLATES[0]["DIRS"] = [BASE_DIR / "mysite" / "templates"]
LOGIN_URL = "/admin/login/"
"""
URL_EXTRAS = """
from django.contrib.staticfiles.urls import staticfiles_urlpatterns

from mysite import views

urlpatterns += [path("ask/", views.ask)]
urlpatterns += staticfiles_urlpatterns()
"""


@pytest.fixture(scope="module")
def fresh_project(tmp_path_factory: pytest.TempPathFactory) -> FreshProject:
    base = tmp_path_factory.mktemp("fresh")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TRIGGER_", "DJANGO_", "VIRTUAL_ENV", "PYTHON"))
    }
    # Build from a copy, so the checkout gets no build/ or egg-info of this build.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "trigger_django",
        source / "trigger_django",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    run(UV, "build", "--wheel", "--out-dir", base / "dist", source, cwd=base, env=env)
    (wheel,) = (base / "dist").glob("trigger_django-*.whl")
    run(UV, "venv", "--quiet", base / "venv", "--python", sys.executable, cwd=base, env=env)
    python = base / "venv" / "bin" / "python"
    run(
        UV, "pip", "install", "--quiet", "--python", python, f"{wheel}[emulator]",
        "pytest", "pytest-django", "pytest-asyncio", cwd=base, env=env,
    )  # fmt: skip

    project = base / "project"
    project.mkdir()
    run(
        base / "venv" / "bin" / "django-admin", "startproject", "mysite", project, cwd=base, env=env
    )
    run(python, "manage.py", "startapp", "reports", cwd=project, env=env)
    for document in ("README.md", "docs/recipes.md", "docs/testing.md"):
        for snippet in snippets(document):
            apply(project, snippet)
    with (project / "mysite" / "settings.py").open("a") as settings:
        settings.write(PROJECT_EXTRAS)
    with (project / "mysite" / "urls.py").open("a") as urls:
        urls.write(URL_EXTRAS)
    templates = project / "mysite" / "templates"
    templates.mkdir()
    (templates / "ask.html").write_text(ASK_HTML)
    (templates / "watch.html").write_text(WATCH_HTML)
    (project / "mysite" / "emulated_tasks.py").write_text(EMULATED_TASKS)

    run(python, "manage.py", "makemigrations", "reports", "-v", "0", cwd=project, env=env)
    run(python, "manage.py", "migrate", "-v", "0", cwd=project, env=env)
    # Step 4: the key is in the server's environment.
    checked = run(
        python, "manage.py", "check", cwd=project, env={**env, "TRIGGER_SECRET_KEY": SECRET_KEY}
    )
    assert "System check identified no issues" in checked, checked
    run(
        python, "manage.py", "createsuperuser", "--noinput", "--username", USERNAME,
        "--email", "ada@example.com", cwd=project,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )  # fmt: skip
    return FreshProject(project, python, env)


class Server:
    """A child process whose log names the URL it listens on."""

    def __init__(self, args: list[Any], project: FreshProject, env: dict[str, str]) -> None:
        self.log = project.root / f"{Path(str(args[1])).name}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [str(a) for a in args],
                cwd=project.root,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (match := pattern.search(self.log.read_text(errors="replace"))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.process.args} did not start:\n{self.output()}")
            time.sleep(0.05)
        return match

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers(fresh_project: FreshProject) -> Iterator[str]:
    """The emulator (the package's management command) and daphne; yields daphne's URL."""
    project = fresh_project
    emulator = Server(
        [
            project.python, "manage.py", "trigger_emulator", "--port", "0",
            "--secret-key", SECRET_KEY, "--tasks-module", "mysite.emulated_tasks",
        ],
        project,
        project.env,
    )  # fmt: skip
    started: list[Server] = [emulator]
    try:
        emulator_url = emulator.wait_for(re.compile(r"listening on (http://\S+)")).group(1)
        daphne = Server(
            [
                project.python,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                "0",
                "mysite.asgi:application",
            ],
            project,
            {**project.env, "TRIGGER_API_URL": emulator_url, "TRIGGER_SECRET_KEY": SECRET_KEY},
        )
        started.append(daphne)
        port = daphne.wait_for(DAPHNE_LISTENING).group(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        for server in reversed(started):
            server.stop()


@pytest.mark.browser
async def test_a_sync_view_triggers_and_chromium_shows_the_text(servers: str) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(f"{servers}/ask/")
            await page.fill("#id_username", USERNAME)
            await page.fill("#id_password", PASSWORD)
            await page.click("input[type=submit]")
            await page.wait_for_url(f"{servers}/ask/")
            console.clear()  # Django admin's login page has no icon: its 404 is not ours
            await page.fill("input[name=prompt]", "Say hello")
            await page.click("button[type=submit]")
            output = page.locator("[data-trigger-stream] [data-trigger-output]")
            await expect(output).to_have_text("".join(ANSWER), timeout=20_000)
            viewer = page.locator("[data-trigger-stream]")
            await expect(viewer).to_have_attribute("data-state", "complete", timeout=20_000)
        finally:
            await browser.close()
    assert [line for line in console if line.startswith("error")] == []


def test_the_docs_example_tests_pass_with_the_installed_plugin(fresh_project: FreshProject) -> None:
    project = fresh_project
    result = subprocess.run(
        [str(project.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "mysite/tests"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
