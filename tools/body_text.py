"""A fetched body as the model reads it: HTML reduced to readable text, text shown, anything else described.

The http family renders its responses with it, the webhook family its replies and the email family the HTML
part of a mail (:func:`html_to_text`), so it is its own module rather than a part of any one family. It only
turns bytes into text: fetching, limits and errors stay with the callers (:mod:`kasloop.tools.http`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin

__all__ = ["html_to_text", "render_body"]


class _TextExtractor(HTMLParser):
    # Not "head": pages often leave it unclosed; what it holds is title (kept), script/style (skipped) and no text.
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "canvas"})
    _BLOCK = frozenset(
        {"p", "div", "section", "article", "header", "footer", "nav", "main", "aside", "h1", "h2", "h3", "h4", "h5",
         "h6", "ul", "ol", "table", "tr", "form", "blockquote", "pre", "hr", "dl", "dt", "dd", "figure", "br", "title"}
    )  # fmt: skip

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.in_title = False
        self.links: list[tuple[str, int]] = []  # href, index of the first text part of the link

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self._SKIP:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href, len(self.parts)))
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr") and not self.skip:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.parts[start:]).strip()
            if href and not href.startswith(("javascript:", "#")) and text:
                del self.parts[start:]
                self.parts.append(f"[{' '.join(text.split())}]({urljoin(self.base_url, href)})")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.parts.append(data)


def html_to_text(html: str, base_url: str = "") -> str:
    """Readable text of an HTML page: title, text in reading order, links as ``[text](url)``."""
    parser = _TextExtractor(base_url)
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title).split())
    return f"# {title}\n\n{text}" if title else text


_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/ecmascript", "application/x-ndjson",
     "application/yaml", "application/x-yaml", "application/toml", "application/x-www-form-urlencoded", "application/graphql"}
)  # fmt: skip


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def render_body(body: bytes, content_type: str, url: str) -> str:
    """The body as the model should see it: text, HTML reduced to text, or a description."""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    match = re.search(r"charset=\"?([\w.:-]+)", params, re.IGNORECASE)
    charset = match.group(1) if match else None
    if not mime:
        head = body[:1024].lstrip().lower()
        if b"\x00" in head:
            return f"[binary content, {len(body)} bytes; not shown]"
        mime = "text/html" if head.startswith((b"<!doctype html", b"<html")) else "text/plain"
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_text(_decode(body, charset), url)
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml")):
        return _decode(body, charset)
    return f"[binary content ({mime}), {len(body)} bytes; not shown]"
