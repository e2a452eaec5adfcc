"""Where the ``browser`` family may go: ``tool_settings.browser`` and the network gate built from it.

The settings (Chromium's path, the host rules, the timeouts, the viewport) and the one check every request
the browser makes goes through (:func:`_refusal`: the family's :class:`~kasloop.tools.network.NetworkGate`,
with the page's own ``data:``/``blob:``/``about:`` content let through) are read by the session, which
applies the check inside Chromium (:mod:`kasloop.tools.browser_session`), and by the tools, which check a
URL before the browser even starts (:mod:`kasloop.tools.browser`, whose docstring describes the family
and its settings).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.tools.contract import ToolContext, ToolFailure
from kasloop.tools.network import AllowDomains, AllowPrivate, NetworkGate

__all__ = ["BrowserSettings", "browser_gate", "load_settings"]

_PAGE_SCHEMES = frozenset({"data", "blob", "about"})  # content the page already holds; no network
_NETWORK_SCHEMES = ("http", "https", "ws", "wss")


# --------------------------------------------------------------------------- settings and policy


class BrowserSettings(BaseModel):
    """``tool_settings.browser`` (see the docstring of :mod:`kasloop.tools.browser`)."""

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
