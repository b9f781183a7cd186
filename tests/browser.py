"""Headless Chromium (Debian's `chromium`) driven by Playwright, for the dashboard tests.

`Browser.page()` opens a page that records console errors and uncaught exceptions;
`Dashboard.shot()` writes a screenshot to the session's temporary folder (its path is
printed at the end of the run, never committed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = os.environ.get("CORO_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: The machine has no outside network: keep Chromium from trying (and failing) to reach it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(tempfile.gettempdir()) / "coro-dashboard-screenshots"


@dataclass
class Dashboard:
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    async def open(self, route: str = "#/runs") -> None:
        await self.page.goto(f"{self.base_url}/dashboard/{route}")

    async def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def dashboard_page(
    browser: object, base_url: str, *, dark: bool = False, width: int = 1280
) -> Dashboard:
    context = await browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": width, "height": 900}, color_scheme="dark" if dark else "light"
    )
    page = await context.new_page()
    page.set_default_timeout(20_000)
    board = Dashboard(page=page, base_url=base_url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            board.errors.append(message.text)

    def on_page_error(error: PlaywrightError) -> None:
        board.errors.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return board
