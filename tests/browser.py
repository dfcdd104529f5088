"""A real headless browser for the page tests: Debian's chromium, driven by Playwright."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser; skips (with the reason) where chromium or playwright is missing."""
    playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup-host.sh installs it)")
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def logged_in_page(browser: Any, url: str, token: str, *, width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A page of the web UI at url, logged in with token; confirmations are accepted."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(url + "/")
        page.fill("#token", token)
        page.keyboard.press("Enter")
        page.locator("#live").filter(has_text="live").wait_for()
        yield page
    finally:
        context.close()


def shot(page: Any, folder: str, step: str) -> None:
    (ARTIFACTS / folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / folder / f"{step}.png"))


def console_answers(page: Any, command: str, answer: str, timeout_s: float = 60) -> None:
    """In the open console dialog: type command (again, until the shell answers) and see answer."""
    import time

    from playwright.sync_api import expect

    expect(page.locator("#console-role")).to_contain_text("You are typing")
    page.locator("#terminal").click()
    deadline = time.monotonic() + timeout_s
    while True:
        page.keyboard.type(command + "\r")
        try:
            expect(page.locator("#terminal .xterm-rows")).to_contain_text(answer, timeout=5_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
