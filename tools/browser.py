"""The ``browser`` family: a real headless Chromium (Playwright, async API) behind a network jail.

One browser per agent, created on first use through
``ctx.resources.shared("browser", ...)`` and reused by every call (same tab,
same cookies, same form state) until ``ToolResources.aclose()`` closes it. A
crashed browser is discarded and a new one started on the next call. Calls on
one browser are serialised (one tab, one action at a time).

Launch (DESIGN §11): Debian's Chromium at ``browser.executable`` with
``--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
--disable-background-networking --disable-component-update --disable-sync``;
``launch_persistent_context`` on a fresh temporary user-data dir, deleted on
close, whose preferences turn network prediction off (no preconnects to hosts
the jail would refuse). Service workers and downloads are off.

The network jail is enforced inside the browser, on **every** request it makes
(navigations, redirect hops, sub-resources, iframes, pop-ups, fetch/XHR and
JS-initiated navigations): request interception is enabled on the browser
target itself (CDP ``Fetch.enable``), so each request, including each hop of a
redirect, is paused until the family's :class:`~kasloop.tools.network.NetworkGate`
(the one network gate http, webhook and email use too) lets it go. Playwright's
own ``context.route`` is not used because it does not see redirect hops. A
request is let through only if

1. its scheme is ``http`` or ``https`` (``data:``, ``blob:`` and ``about:``
   sub-resources stay inside the page and pass; ``file:``, ``chrome:`` and
   every other scheme are refused);
2. its host (and port) matches ``browser.allow_domains`` when that list is set;
3. no address the host resolves to is one of kasloop's own receivers
   (:mod:`kasloop.channels.receivers`), whatever ``allow_private`` says;
4. every address the host resolves to passes the gate's address check
   (:func:`kasloop.tools.network.address_blocked`): loopback, private,
   link-local and other non-public addresses are refused unless allowed.

Chromium resolves host names itself, so unlike http and webhook the browser
cannot connect to the very address the gate checked: a name whose DNS answer
changes between the check and Chromium's own lookup is not caught here.

A refused navigation is aborted (the tab stays where it was) and the tool
reports ``denied`` naming the host and the setting that would allow it;
refused sub-resources are counted in the output. WebSockets are not seen by
``Fetch``: they are gated by Playwright's ``route_web_socket`` with the same
check.

Tools: ``browser_open`` (url), ``browser_click`` (selector),
``browser_fill`` (selector, value), ``browser_select`` (selector, value),
``browser_text`` (selector?), ``browser_screenshot`` (path: a PNG written
atomically inside the workspace through the files family's jail) and
``browser_eval`` (a **read-only** JavaScript expression: CDP
``Runtime.evaluate`` with ``throwOnSideEffect``, so an expression that would
change the page or its state fails). Selectors are Playwright selectors (CSS,
``text=...``, ``role=...``). Open and click report the resulting URL and title.

Errors: refused URL → ``denied``; a bad URL, selector or value and a selector
that matches nothing → ``bad_args``; a page or action slower than its timeout
→ ``timeout``; a crashed browser or network failure → ``transient``.

Config (``ToolContext.extra["browser"]``, all optional):

``executable``          Chromium binary (``/usr/bin/chromium``).
``allow_domains``       list of host rules, the grammar every family shares (:mod:`kasloop.tools.network`):
                        ``example.com``, ``*.example.com`` (subdomains, not the apex), globs such as
                        ``api-*.example.com``, IP addresses, each optionally with ``:port``
                        (``127.0.0.1:8080``, ``[::1]:8080``); empty = any public host. An IP address
                        named here may be private (naming it is explicit); a host *name* or glob
                        never unlocks a private address.
``allow_private``       ``true`` (any non-public address) or a list of networks; default false.
``navigation_timeout``  seconds for a page to load (15).
``action_timeout``      seconds for a click, fill, select, text or eval (5).
``viewport``            ``[width, height]`` of the tab (``[1280, 800]``).
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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.files import atomic_write, resolve_in_workspace
from kasloop.tools.http import status_kind
from kasloop.tools.network import AllowDomains, AllowPrivate, NetworkGate

__all__ = ["BROWSER_ARGS", "BROWSER_TOOLS", "BrowserSettings", "browser_gate"]

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
_PAGE_SCHEMES = frozenset({"data", "blob", "about"})  # content the page already holds; no network
_NETWORK_SCHEMES = ("http", "https", "ws", "wss")
_TOOL_TIMEOUT = 120.0  # outer bound; each step has its own timeout from the settings


# --------------------------------------------------------------------------- settings and policy


class BrowserSettings(BaseModel):
    """``tool_settings.browser`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    executable: str = "/usr/bin/chromium"
    allow_domains: AllowDomains = Field(default_factory=list)
    allow_private: AllowPrivate = False
    navigation_timeout: float = Field(default=15.0, gt=0, le=600)
    action_timeout: float = Field(default=5.0, gt=0, le=600)
    viewport: tuple[int, int] = (1280, 800)

    @field_validator("viewport")
    @classmethod
    def _viewport(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(100 <= v <= 10000 for v in value):
            raise ValueError("width and height must be between 100 and 10000")
        return value


def load_settings(ctx: ToolContext) -> BrowserSettings:
    """The call's settings; a bad value is a one-line ``permanent`` failure naming the key."""
    raw = ctx.extra.get("browser") or {}
    try:
        return BrowserSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "browser"
        raise ToolFailure("permanent", f"bad browser config `browser.{key}`: {err['msg']}; fix tool_settings.browser in kasloop.toml") from None


def browser_gate(settings: BrowserSettings) -> NetworkGate:
    """The network gate of ``browser.allow_domains`` / ``browser.allow_private``."""
    return NetworkGate.from_settings("browser", allow_domains=settings.allow_domains, allow_private=settings.allow_private)


async def _refusal(gate: NetworkGate, url: str) -> str | None:
    """Why the browser may not request ``url`` (one line naming the fix), or ``None``.

    ``data:``, ``blob:`` and ``about:`` URLs are content the page already holds: they pass.
    """
    if url.partition(":")[0].strip().lower() in _PAGE_SCHEMES:
        return None
    return await gate.refusal(url, schemes=_NETWORK_SCHEMES)


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


# --------------------------------------------------------------------------- page helpers


async def _page_state(page: Any, timeout: float) -> tuple[str, str]:
    try:
        title = await asyncio.wait_for(page.title(), timeout)
    except Exception:  # noqa: BLE001 - a page in the middle of navigating has no title yet
        title = ""
    return page.url, title


def _describe(url: str, title: str) -> str:
    return f"Now at {url} — title: {json.dumps(title, ensure_ascii=False)}"


async def _find(page: Any, selector: str, settings: BrowserSettings) -> Any:
    """The one element ``selector`` names, waiting up to the action timeout for it to exist."""
    from playwright.async_api import Error as PlaywrightError

    locator = page.locator(selector)
    try:
        await locator.first.wait_for(state="attached", timeout=settings.action_timeout * 1000)
        count = await locator.count()
    except PlaywrightError as exc:
        if _is_timeout(exc):
            raise ToolFailure("bad_args", f"no element matches `{selector}` on {page.url} (waited {settings.action_timeout:g} s); read the page with browser_text to pick a selector") from None
        raise _selector_failure(exc, selector) from None
    if count > 1:
        raise ToolFailure("bad_args", f"`{selector}` matches {count} elements; make it specific to one (e.g. by id, or `{selector} >> nth=0`)")
    return locator


def _selector_failure(exc: BaseException, selector: str) -> ToolFailure:
    message = _first_line(exc)
    if "selector" in message.lower() or "parsing" in message.lower():
        return ToolFailure("bad_args", f"`{selector}` is not a valid selector: {message}")
    return ToolFailure("bad_args", f"cannot use `{selector}`: {message}")


async def _act(session: BrowserSession, ctx: ToolContext, settings: BrowserSettings, selector: str, verb: str, action: Any) -> str:
    """Run ``action(locator, timeout_ms)`` on the element, then report where the tab is."""
    from playwright.async_api import Error as PlaywrightError

    page = await session.current_page()
    page.set_default_navigation_timeout(settings.navigation_timeout * 1000)
    since, pages_before, targets_before = session.mark(), session.pages_opened, session.page_targets
    locator = await _find(page, selector, settings)
    try:
        await action(locator, settings.action_timeout * 1000)
    except PlaywrightError as exc:
        if not session.alive:
            raise await _crashed(ctx, session) from None
        if _is_timeout(exc):
            raise ToolFailure("timeout", f"could not {verb} `{selector}` within {settings.action_timeout:g} s (hidden, disabled or covered?); raise browser.action_timeout if the page is slow") from None
        raise ToolFailure("bad_args", f"could not {verb} `{selector}`: {_first_line(exc)}") from None
    await session.follow_new_tab(targets_before, pages_before, settings.navigation_timeout)
    page = await session.current_page()
    try:
        await page.wait_for_load_state("load", timeout=settings.navigation_timeout * 1000)
    except PlaywrightError as exc:
        if _is_timeout(exc):
            await session.stop_loading(page)
            raise ToolFailure("timeout", f"after the {verb}, {page.url} did not finish loading within {settings.navigation_timeout:g} s (browser.navigation_timeout)") from None
    refused = _navigation_refusal(session, since)
    url, title = await _page_state(page, settings.action_timeout)
    if refused is not None:
        raise ToolFailure("denied", f"the {verb} tried to open {refused.url}, which was refused: {refused.reason}. The tab stays at {url}")
    return f"{_describe(url, title)}{_blocked_note(session, since)}"


# JS run in the page (ours, not the model's): readable text in reading order, links as [text](url), form
# fields with their current values (passwords hidden). Hidden elements, scripts and styles are skipped.
_TEXT_JS = r"""
(roots) => {
  const SKIP = new Set(["SCRIPT","STYLE","NOSCRIPT","TEMPLATE","HEAD","svg","SVG","IFRAME","OBJECT","CANVAS"]);
  const BLOCK = new Set(["P","DIV","SECTION","ARTICLE","HEADER","FOOTER","NAV","MAIN","ASIDE","H1","H2","H3","H4","H5",
    "H6","UL","OL","TABLE","TR","FORM","BLOCKQUOTE","PRE","HR","DL","DT","DD","FIGURE","FIELDSET","LABEL","TBODY"]);
  const out = [];
  const name = (el) => el.getAttribute("name") || el.id || "";
  const shown = (el) => !el.checkVisibility || el.checkVisibility({visibilityProperty: true});
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { out.push(node.data); return; }
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    const el = node, tag = el.tagName;
    if (SKIP.has(tag) || !shown(el)) return;
    if (tag === "INPUT") {
      const type = (el.type || "text").toLowerCase();
      if (type === "hidden") return;
      if (type === "checkbox" || type === "radio") out.push(` [${type} ${name(el)}${el.checked ? " checked" : ""}] `);
      else if (type === "submit" || type === "button" || type === "reset") out.push(` [button: ${el.value || type}] `);
      else if (type === "password") out.push(` [password ${name(el)}: ${el.value ? el.value.length + " characters" : "empty"}] `);
      else out.push(` [input ${name(el)}: ${JSON.stringify(el.value)}] `);
      return;
    }
    if (tag === "TEXTAREA") { out.push(` [textarea ${name(el)}: ${JSON.stringify(el.value)}] `); return; }
    if (tag === "SELECT") {
      const chosen = Array.from(el.selectedOptions).map((o) => o.label).join(", ");
      const all = Array.from(el.options).map((o) => o.label).join(" | ");
      out.push(` [select ${name(el)}: ${JSON.stringify(chosen)} of ${all}] `);
      return;
    }
    if (tag === "BR") { out.push("\n"); return; }
    if (tag === "LI") out.push("\n- ");
    else if (tag === "TD" || tag === "TH") out.push(" | ");
    else if (BLOCK.has(tag)) out.push("\n");
    if (tag === "BUTTON") out.push(" [button: ");
    const link = tag === "A" && el.href && !el.getAttribute("href").startsWith("javascript:") && !el.getAttribute("href").startsWith("#");
    const start = out.length;
    for (const child of el.childNodes) walk(child);
    if (tag === "BUTTON") out.push("] ");
    if (link) {
      const text = out.splice(start).join("").replace(/\s+/g, " ").trim();
      if (text) out.push(`[${text}](${el.href})`);
    }
    if (BLOCK.has(tag)) out.push("\n");
  };
  roots.forEach((root, i) => { if (i) out.push("\n\n---\n\n"); walk(root); });
  return out.join("");
}
"""


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- tools


class OpenArgs(BaseModel):
    url: str = Field(description="http:// or https:// URL.", json_schema_extra={"kasloop": "url"})


class SelectorArgs(BaseModel):
    selector: str = Field(min_length=1, description="CSS or Playwright selector of one element.")


class FillArgs(BaseModel):
    selector: str = Field(min_length=1, description="CSS or Playwright selector of one input.")
    value: str = Field(description="Text to type into it.")


class ChooseArgs(BaseModel):
    selector: str = Field(min_length=1, description="CSS or Playwright selector of one <select>.")
    value: str = Field(description="Value or visible label of the option.")


class TextArgs(BaseModel):
    selector: str | None = Field(default=None, description="Only this element's text (default: whole page).")


class ScreenshotArgs(BaseModel):
    path: str = Field(description="PNG path relative to the workspace root.", json_schema_extra={"kasloop": "path", "kasloop_acts_as": "files_write"})
    full_page: bool = Field(default=False, description="Capture the whole page, not just the window.")


class EvalArgs(BaseModel):
    expression: str = Field(min_length=1, description="Read-only JavaScript expression, e.g. document.title.")


async def _open(args: OpenArgs, ctx: ToolContext) -> ToolResult:
    from playwright.async_api import Error as PlaywrightError

    settings = load_settings(ctx)
    scheme = urlsplit(args.url.strip()).scheme.lower()
    if scheme not in ("http", "https"):
        raise ToolFailure("bad_args", f"`{args.url}` is not an http(s) URL; only http:// and https:// pages can be opened")
    reason = await _refusal(await browser_gate(settings).with_receivers(ctx), args.url.strip())
    if reason is not None:  # refused before the browser even starts
        raise ToolFailure("denied", reason)
    session = await _session(ctx, settings)
    async with session.lock:
        page = await session.current_page()
        since = session.mark()
        try:
            response = await page.goto(args.url.strip(), wait_until="load", timeout=settings.navigation_timeout * 1000)
        except PlaywrightError as exc:
            if not session.alive:
                raise await _crashed(ctx, session) from None
            refused = _navigation_refusal(session, since)
            if refused is not None:
                raise ToolFailure("denied", f"opening {args.url} led to {refused.url}, which was refused: {refused.reason}") from None
            if _is_timeout(exc):
                await session.stop_loading(page)
                raise ToolFailure("timeout", f"{args.url} did not finish loading within {settings.navigation_timeout:g} s (browser.navigation_timeout)") from None
            raise _net_failure(exc, args.url) from None
        url, title = await _page_state(page, settings.action_timeout)
        status = response.status if response is not None else 200
        text = f"HTTP {status}. {_describe(url, title)}{_blocked_note(session, since)}"
        metadata = {"url": url, "title": title, "status": status}
        if status >= 400:
            return ToolResult(ok=False, output=f"Error: {text}", error_kind=status_kind(status), metadata=metadata)
        return ToolResult(ok=True, output=text, metadata=metadata)


async def _state_result(session: BrowserSession, report: str) -> ToolResult:
    page = session.page
    return ToolResult(ok=True, output=report, metadata={"url": page.url if page is not None else ""})


async def _click(args: SelectorArgs, ctx: ToolContext) -> ToolResult:
    settings = load_settings(ctx)
    session = await _session(ctx, settings)
    async with session.lock:
        report = await _act(session, ctx, settings, args.selector, "click", lambda loc, ms: loc.click(timeout=ms))
        return await _state_result(session, f"Clicked `{args.selector}`. {report}")


async def _fill(args: FillArgs, ctx: ToolContext) -> ToolResult:
    settings = load_settings(ctx)
    session = await _session(ctx, settings)
    async with session.lock:
        report = await _act(session, ctx, settings, args.selector, "fill", lambda loc, ms: loc.fill(args.value, timeout=ms))
        return await _state_result(session, f"Filled `{args.selector}` with {len(args.value)} characters. {report}")


async def _choose(args: ChooseArgs, ctx: ToolContext) -> ToolResult:
    settings = load_settings(ctx)
    session = await _session(ctx, settings)

    async def choose(locator: Any, ms: float) -> None:
        options = await locator.evaluate("el => el.tagName === 'SELECT' ? Array.from(el.options).map(o => [o.value, o.label]) : null", timeout=ms)
        if options is None:
            raise ToolFailure("bad_args", f"`{args.selector}` is not a <select>; use browser_fill or browser_click for other fields")
        if not any(args.value in pair for pair in options):
            choices = ", ".join(json.dumps(label or value) for value, label in options[:20])
            raise ToolFailure("bad_args", f"`{args.selector}` has no option `{args.value}`; choose one of: {choices}")
        await locator.select_option(args.value, timeout=ms)

    async with session.lock:
        report = await _act(session, ctx, settings, args.selector, "select", choose)
        return await _state_result(session, f"Selected `{args.value}` in `{args.selector}`. {report}")


async def _text(args: TextArgs, ctx: ToolContext) -> ToolResult:
    from playwright.async_api import Error as PlaywrightError

    settings = load_settings(ctx)
    session = await _session(ctx, settings)
    async with session.lock:
        page = await session.current_page()
        ms = settings.action_timeout * 1000
        try:
            if args.selector:
                locator = page.locator(args.selector)
                try:
                    await locator.first.wait_for(state="attached", timeout=ms)
                except PlaywrightError as exc:
                    if _is_timeout(exc):
                        raise ToolFailure("bad_args", f"no element matches `{args.selector}` on {page.url} (waited {settings.action_timeout:g} s)") from None
                    raise _selector_failure(exc, args.selector) from None
                raw = await locator.evaluate_all(_TEXT_JS)
            else:
                raw = await page.evaluate(f"({_TEXT_JS})([document.body || document.documentElement])")
        except PlaywrightError as exc:
            if not session.alive:
                raise await _crashed(ctx, session) from None
            if _is_timeout(exc):
                raise ToolFailure("timeout", f"reading {page.url} took longer than {settings.action_timeout:g} s") from None
            raise ToolFailure("transient", f"could not read {page.url}: {_first_line(exc)}") from None
        url, title = await _page_state(page, settings.action_timeout)
        body = _tidy(raw or "") or "(no text)"
        head = f"# {title}\n{url}" if title else url
        return ToolResult(ok=True, output=f"{head}\n\n{body}", metadata={"url": url, "title": title, "chars": len(body)})


async def _screenshot(args: ScreenshotArgs, ctx: ToolContext) -> ToolResult:
    from playwright.async_api import Error as PlaywrightError

    target = resolve_in_workspace(ctx.workspace, args.path)  # before any browser work: refused paths cost nothing
    if target.suffix.lower() != ".png":
        raise ToolFailure("bad_args", f"`{args.path}` must end in .png")
    if target.is_dir():
        raise ToolFailure("bad_args", f"`{args.path}` is a folder; give a file path ending in .png")
    settings = load_settings(ctx)
    session = await _session(ctx, settings)
    async with session.lock:
        page = await session.current_page()
        try:
            data: bytes = await page.screenshot(type="png", full_page=args.full_page, timeout=settings.navigation_timeout * 1000)
        except PlaywrightError as exc:
            if not session.alive:
                raise await _crashed(ctx, session) from None
            if _is_timeout(exc):
                raise ToolFailure("timeout", f"the screenshot of {page.url} took longer than {settings.navigation_timeout:g} s") from None
            raise ToolFailure("transient", f"could not take a screenshot of {page.url}: {_first_line(exc)}") from None
    await asyncio.to_thread(atomic_write, target, data)
    return ToolResult(ok=True, output=f"Saved a screenshot of {page.url} to {args.path} ({len(data)} bytes).", metadata={"path": args.path, "bytes": len(data), "url": page.url})


def _js_value(result: dict[str, Any]) -> str:
    if "unserializableValue" in result:
        return str(result["unserializableValue"])
    if result.get("type") == "undefined":
        return "undefined"
    if "value" in result:
        return json.dumps(result["value"], ensure_ascii=False)
    return str(result.get("description", result.get("type", "")))


async def _eval(args: EvalArgs, ctx: ToolContext) -> ToolResult:
    from playwright.async_api import Error as PlaywrightError

    settings = load_settings(ctx)
    session = await _session(ctx, settings)
    async with session.lock:
        page = await session.current_page()
        try:
            cdp = await session.page_session(page)
            reply = await cdp.send("Runtime.evaluate", {
                "expression": args.expression, "throwOnSideEffect": True, "returnByValue": True,
                "timeout": int(settings.action_timeout * 1000), "silent": True,
            })  # fmt: skip
        except PlaywrightError as exc:
            if not session.alive:
                raise await _crashed(ctx, session) from None
            session.page_cdp.pop(page, None)
            if "terminated" in str(exc).lower():
                raise ToolFailure("timeout", f"the expression ran longer than {settings.action_timeout:g} s and was stopped") from None
            raise ToolFailure("transient", f"could not evaluate on {page.url}: {_first_line(exc)}") from None
    result = reply.get("result", {})
    if "exceptionDetails" in reply:
        description = str(result.get("description") or reply["exceptionDetails"].get("text", "error")).splitlines()[0]
        if "side-effect" in description:
            raise ToolFailure("denied", "browser_eval is read-only and this expression would change the page or its state; read values only, and use browser_click / browser_fill / browser_select to act")
        raise ToolFailure("bad_args", f"the expression failed: {description}")
    return ToolResult(ok=True, output=_js_value(result), metadata={"type": result.get("type", ""), "url": page.url})


BROWSER_TOOLS: tuple[Tool, ...] = (
    Tool(name="browser_open", description="Open a URL in the browser tab.", args_model=OpenArgs, func=_open, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, family="browser"),
    Tool(name="browser_click", description="Click an element of the open page.", args_model=SelectorArgs, func=_click, risk="low", idempotent=False, timeout=_TOOL_TIMEOUT, family="browser"),
    Tool(name="browser_fill", description="Type a value into an input of the open page.", args_model=FillArgs, func=_fill, risk="low", idempotent=False, timeout=_TOOL_TIMEOUT, family="browser"),
    Tool(name="browser_select", description="Choose an option of a <select> on the open page.", args_model=ChooseArgs, func=_choose, risk="low", idempotent=False, timeout=_TOOL_TIMEOUT, family="browser"),
    Tool(name="browser_text", description="Read the open page (or one element) as text.", args_model=TextArgs, func=_text, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, output_limit=6000, family="browser"),
    Tool(name="browser_screenshot", description="Save a PNG screenshot of the open page in the workspace.", args_model=ScreenshotArgs, func=_screenshot, risk="low", idempotent=True, timeout=_TOOL_TIMEOUT, family="browser"),
    Tool(name="browser_eval", description="Evaluate a read-only JavaScript expression on the open page.", args_model=EvalArgs, func=_eval, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, family="browser"),
)
