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
   (:mod:`kasloop.safety.receivers`), whatever ``allow_private`` says;
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
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.browser_page import _TEXT_JS, _act, _describe, _page_state, _selector_failure, _tidy
from kasloop.tools.browser_session import (
    BROWSER_ARGS,
    BrowserSession,
    _blocked_note,
    _crashed,
    _first_line,
    _is_timeout,
    _navigation_refusal,
    _net_failure,
    _session,
)
from kasloop.tools.browser_settings import BrowserSettings, _refusal, browser_gate, load_settings
from kasloop.tools.files import atomic_write, resolve_in_workspace
from kasloop.tools.http import status_kind

# The family is three modules besides this one, each with one job: its settings and network gate in
# browser_settings, the shared Chromium (launch, request interception, crashes, close) in browser_session,
# acting on and reading the open tab in browser_page. This module keeps the family's description (above),
# the tools and their arguments, and re-exports the names importers use.
__all__ = ["BROWSER_ARGS", "BROWSER_TOOLS", "BrowserSession", "BrowserSettings", "browser_gate"]

_TOOL_TIMEOUT = 120.0  # outer bound; each step has its own timeout from the settings


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
