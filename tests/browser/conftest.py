"""Browser fixtures: Debian's Chromium, driven by Playwright, against the live server.

The real stack: the ASGI web server as deployed, a Celery worker and the Claude simulator
(tests/fixtures.py), PostgreSQL and Redis. Chromium is never
downloaded: without /usr/bin/chromium these tests are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
SCREENSHOTS = pytest.StashKey[Path]()
# Runs before each document's own scripts, so every Content-Security-Policy violation of the
# page (an inline style attribute is reported while the HTML is parsed) is kept.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} ` +
      `(${event.sourceFile || location.pathname}:${event.lineNumber})`
  );
});
"""

Snap = Callable[..., None]


@pytest.fixture(scope="package")
def chromium() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium); "
            "they never download a browser"
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread, and Django refuses
    # ORM calls while one runs; the tests' own queries are plain synchronous code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def anonymous_page(chromium, web_server, settings):
    """A fresh browser tab on the ASGI web server; dialogs (confirm) are accepted."""
    # The worker's answers come from the simulator, so the pages say so, as in the demo (the
    # web server's environment says so too).
    settings.AIJOBS_SIMULATED = True
    context = chromium.new_context(viewport=DESKTOP, base_url=web_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


@pytest.fixture
def page(anonymous_page, web_server, user, client, settings):
    """A tab signed in as `user` (a session made by the test client, not the login form)."""
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    anonymous_page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": web_server.url}]
    )
    return anonymous_page


@pytest.fixture
def console_errors(anonymous_page) -> list[str]:
    """Errors the page logs (a CSP refusal is one) or throws, from now on."""
    errors: list[str] = []
    anonymous_page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    anonymous_page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture(scope="session")
def screenshot_dir(request) -> Path | None:
    """Where screenshots go: AIJOBS_SCREENSHOTS (`make screenshots`), else nowhere."""
    configured = os.environ.get("AIJOBS_SCREENSHOTS")
    if not configured:
        return None
    folder = Path(configured).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS] = folder
    return folder


@pytest.fixture
def snap(screenshot_dir) -> Snap:
    """snap(page, name): full-page screenshots of the page at desktop and phone widths (or
    the given sizes), when screenshots were asked for; the viewport is restored after."""

    def snap(page, name: str, sizes: tuple[str, ...] = ("desktop", "phone")) -> None:
        if screenshot_dir is None:
            return
        viewport = page.viewport_size
        for size in sizes:
            page.set_viewport_size(VIEWPORTS[size])
            page.screenshot(path=screenshot_dir / f"{name}-{size}.png", full_page=True)
        page.set_viewport_size(viewport)

    return snap


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    folder = config.stash.get(SCREENSHOTS, None)
    if folder is not None:
        terminalreporter.write_line(f"browser screenshots: {folder}")
