"""Acting on and reading the ``browser`` family's open tab: find one element, act on it, report where the tab is.

What every page tool shares once the browser runs (:mod:`kasloop.tools.browser_session`): waiting for a
selector to name exactly one element, running a click, fill or select and following the tab it opens,
reporting the URL and title, and the script that turns a page into readable text. The tools that call these
are :mod:`kasloop.tools.browser`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from kasloop.tools.browser_session import (
    BrowserSession,
    _blocked_note,
    _crashed,
    _first_line,
    _is_timeout,
    _navigation_refusal,
)
from kasloop.tools.browser_settings import BrowserSettings
from kasloop.tools.contract import ToolContext, ToolFailure

__all__: list[str] = []  # helpers of the browser family's own modules only


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
