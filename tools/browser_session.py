"""One agent's Chromium for the ``browser`` family: launch, request interception, the shared tab, close.

The browser outlives the calls that use it (``ctx.resources.shared("browser", ...)``), so what it is and how
it starts, gates every request (CDP ``Fetch``), follows new tabs, crashes and closes lives here, apart from
what a tool does with the open page (:mod:`kasloop.tools.browser_page`) and from the tools themselves
(:mod:`kasloop.tools.browser`, whose docstring describes the launch flags and the network jail). Turning
Playwright's and Chromium's errors into tool failures is here too: launching needs it as much as the tools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kasloop.tools.browser_settings import BrowserSettings, _refusal, browser_gate
from kasloop.tools.contract import ToolContext, ToolFailure
from kasloop.tools.network import NetworkGate

__all__ = ["BROWSER_ARGS", "RESOURCE_KEY", "BrowserSession"]

# Named for the family, not for this module: kasloop.safety.secrets.LOGGERS redacts the records of this logger by that name.
_log = logging.getLogger("kasloop.tools.browser")

BROWSER_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Chromium's command line (DESIGN §11)."""

RESOURCE_KEY = "browser"


# --------------------------------------------------------------------------- the shared browser


@dataclass
class _Blocked:
    url: str
    reason: str
    navigation: bool


@dataclass
class BrowserSession:
    """One agent's browser: Playwright, the browser, its context, the current tab and the jail."""

    playwright: Any
    browser: Any
    context: Any
    cdp: Any  # browser-target CDP session holding the request interception
    profile: Path
    gate: NetworkGate
    """Where this browser's requests may go (set again from each call's settings)."""
    pid: int | None = None
    page: Any = None
    blocked: list[_Blocked] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    page_cdp: dict[Any, Any] = field(default_factory=dict)  # tab -> its CDP session
    pages_opened: int = 0  # tabs opened since launch, as Playwright reports them
    last_page: Any = None
    page_added: asyncio.Event = field(default_factory=asyncio.Event)
    page_targets: int = 0  # tabs the browser created (known before Playwright reports them as pages)

    @property
    def alive(self) -> bool:
        return not self.disconnected.is_set() and self.browser.is_connected()

    async def current_page(self) -> Any:
        """The tab every call works on (a new one if it was closed or crashed)."""
        if self.page is None or self.page.is_closed():
            self.page_cdp.pop(self.page, None)
            self.page = await self.context.new_page()
        return self.page

    async def page_session(self, page: Any) -> Any:
        """A CDP session on ``page`` (for read-only evaluation and stopping a load), created once per tab."""
        cdp = self.page_cdp.get(page)
        if cdp is None:
            cdp = self.page_cdp[page] = await page.context.new_cdp_session(page)
        return cdp

    async def stop_loading(self, page: Any) -> None:
        """Cancel a load that timed out, so it cannot commit later and interrupt the next call."""
        try:
            await (await self.page_session(page)).send("Page.stopLoading")
        except Exception as exc:  # noqa: BLE001 - best effort: the next navigation replaces it anyway
            _log.debug("stopping a slow load failed: %s", exc)

    def mark(self) -> int:
        """Where this action's refusals start in ``blocked`` (older ones are dropped: an agent runs for days)."""
        if len(self.blocked) > 200:
            del self.blocked[:-50]
        return len(self.blocked)

    def on_page(self, page: Any) -> None:
        self.pages_opened += 1
        self.last_page = page
        self.page_added.set()

    def on_target(self, event: dict[str, Any]) -> None:
        if event.get("targetInfo", {}).get("type") == "page":
            self.page_targets += 1

    async def follow_new_tab(self, targets_before: int, pages_before: int, timeout: float) -> None:
        """Switch to the tab an action opened (a ``target=_blank`` link, ``window.open``)."""
        if self.page_targets == targets_before:
            return
        while self.pages_opened <= pages_before:
            self.page_added.clear()
            try:
                await asyncio.wait_for(self.page_added.wait(), timeout)
            except TimeoutError:
                return
        old, self.page = self.page, self.last_page
        if old is not None and old is not self.page:  # one tab per agent: the model has no way back to it
            self.page_cdp.pop(old, None)
            await old.close()

    def on_paused(self, event: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._decide(event))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _decide(self, event: dict[str, Any]) -> None:
        request_id, url = event["requestId"], event["request"]["url"]
        navigation = event.get("resourceType") == "Document"
        try:
            reason = await _refusal(self.gate, url)
        except Exception as exc:  # noqa: BLE001 - fail closed
            reason = f"the request could not be checked ({type(exc).__name__})"
        try:
            if reason is None:
                await self.cdp.send("Fetch.continueRequest", {"requestId": request_id})
                return
            self.blocked.append(_Blocked(url=url, reason=reason, navigation=navigation))
            # "Aborted" leaves a tab where it was; "BlockedByClient" would show an error page instead.
            error = "Aborted" if navigation else "BlockedByClient"
            await self.cdp.send("Fetch.failRequest", {"requestId": request_id, "errorReason": error})
        except Exception as exc:  # noqa: BLE001 - the browser may be closing
            _log.debug("request interception reply failed: %s", exc)

    async def gate_websocket(self, ws: Any) -> None:
        reason = await _refusal(self.gate, ws.url)
        if reason is None:
            ws.connect_to_server()
        else:
            self.blocked.append(_Blocked(url=ws.url, reason=reason, navigation=False))
            await ws.close(code=1008, reason="refused by kasloop")


def _new_profile() -> Path:
    """A fresh user-data dir whose preferences turn off network prediction.

    Chromium preconnects to a navigation's target (and to links under the
    mouse) before the request itself exists; those bare TCP connections would
    reach hosts the jail refuses. ``network_prediction_options = 2`` ("never")
    turns preconnect, prefetch and prerender off.
    """
    profile = Path(tempfile.mkdtemp(prefix="kasloop-chromium-"))
    (profile / "Default").mkdir()
    prefs = {"net": {"network_prediction_options": 2}, "profile": {"password_manager_enabled": False}}
    (profile / "Default" / "Preferences").write_text(json.dumps(prefs))
    return profile


async def _launch(settings: BrowserSettings) -> BrowserSession:
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    if not os.access(settings.executable, os.X_OK):
        raise ToolFailure("permanent", f"Chromium not found at `{settings.executable}`; install Debian's `chromium` package or set browser.executable")
    profile = await asyncio.to_thread(_new_profile)
    playwright = await async_playwright().start()
    width, height = settings.viewport
    try:
        context = await playwright.chromium.launch_persistent_context(
            str(profile), executable_path=settings.executable, args=list(BROWSER_ARGS), headless=True,
            service_workers="block", accept_downloads=False, viewport={"width": width, "height": height},
        )  # fmt: skip
    except PlaywrightError as exc:
        await playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)
        raise ToolFailure("permanent", f"Chromium at `{settings.executable}` did not start: {_first_line(exc)}") from None
    try:
        browser = context.browser
        cdp = await browser.new_browser_cdp_session()
        session = BrowserSession(playwright=playwright, browser=browser, context=context, cdp=cdp, profile=profile, gate=browser_gate(settings))
        browser.on("disconnected", lambda _: session.disconnected.set())
        context.on("close", lambda _: session.disconnected.set())
        cdp.on("Fetch.requestPaused", session.on_paused)
        await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
        info = await cdp.send("SystemInfo.getProcessInfo")
        session.pid = next((p["id"] for p in info.get("processInfo", []) if p.get("type") == "browser"), None)
        context.on("page", session.on_page)
        cdp.on("Target.targetCreated", session.on_target)
        await cdp.send("Target.setDiscoverTargets", {"discover": True})
        await context.route_web_socket(re.compile(".*"), session.gate_websocket)
        session.page = context.pages[0] if context.pages else None
        return session
    except BaseException:
        await context.close()
        await playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)
        raise


async def _close(session: BrowserSession) -> None:
    """Close the browser, stop the driver and delete the temporary profile."""
    try:
        if session.alive:
            await session.context.close()
        await session.browser.close()
    finally:
        for task in list(session.tasks):
            task.cancel()
        try:
            await session.playwright.stop()
        finally:
            await asyncio.to_thread(shutil.rmtree, session.profile, True)


async def _session(ctx: ToolContext, settings: BrowserSettings) -> BrowserSession:
    """The agent's browser, (re)started if needed, with this call's gate."""
    session: BrowserSession = await ctx.resources.shared(RESOURCE_KEY, lambda: _launch(settings), _close)
    if not session.alive:
        await ctx.resources.discard(RESOURCE_KEY)
        session = await ctx.resources.shared(RESOURCE_KEY, lambda: _launch(settings), _close)
    session.gate = await browser_gate(settings).with_receivers(ctx)
    return session


# --------------------------------------------------------------------------- error mapping


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"^\w+\.\w+: ", "", line)  # drop Playwright's "Page.goto: " prefix


def _is_timeout(exc: BaseException) -> bool:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    return isinstance(exc, PlaywrightTimeout)


async def _crashed(ctx: ToolContext, session: BrowserSession) -> ToolFailure:
    await ctx.resources.discard(RESOURCE_KEY)
    return ToolFailure("transient", "the browser crashed or was closed; call again to start a new one (the open page is lost)")


_NET_KINDS = {
    "ERR_NAME_NOT_RESOLVED": "permanent",
    "ERR_CERT": "permanent",
    "ERR_SSL": "permanent",
    "ERR_INVALID_URL": "bad_args",
    "ERR_UNSAFE_PORT": "bad_args",
}


def _net_failure(exc: BaseException, url: str) -> ToolFailure:
    message = _first_line(exc)
    for marker, kind in _NET_KINDS.items():
        if marker in message:
            return ToolFailure(kind, f"could not open {url}: {message}")  # type: ignore[arg-type]
    return ToolFailure("transient", f"could not open {url}: {message}")


def _navigation_refusal(session: BrowserSession, since: int) -> _Blocked | None:
    return next((b for b in session.blocked[since:] if b.navigation), None)


def _blocked_note(session: BrowserSession, since: int) -> str:
    others = [b for b in session.blocked[since:] if not b.navigation]
    if not others:
        return ""
    hosts = sorted({urlsplit(b.url).netloc or b.url[:60] for b in others})
    return f"\n({len(others)} request(s) from the page were refused: {', '.join(hosts[:5])}{' ...' if len(hosts) > 5 else ''})"
