"""Mail addresses and Message-IDs for the ``email`` family (:mod:`kasloop.tools.email`).

:func:`parse_addresses` is the one address grammar of the family: the settings
(``from_address``), ``email_send``'s recipients, the inbox feed's and the approval
channel's senders are all read with it, so what is checked against an allowlist is
exactly what goes into the envelope and the headers. :func:`message_id_for` makes
the ``Message-ID`` that every retry of one call shares.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from email.headerregistry import Address
from email.utils import make_msgid

from kasloop.config.mail import CONTROL_CHARS as _CONTROL_RE

__all__ = ["message_id_for", "parse_addresses"]

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
_NAMED_RE = re.compile(r'^(?P<name>"(?:[^"\\]|\\.)*"|[^"<>]*?)\s*<(?P<addr>[^<>\s]*)>$')
_NAME_SPECIALS = re.compile(r'[()<>@,;:\\"\[\]]')
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


# --------------------------------------------------------------------------- addresses and message ids


def _split_list(text: str) -> Iterator[str]:
    """Split on commas that are outside quotes and angle brackets."""
    start, quoted, angle, escaped = 0, False, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == "," and not quoted and not angle:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def parse_addresses(text: str) -> list[Address]:
    """``a@x.org, Name <b@y.org>, "Last, First" <c@z.org>`` → addresses; ``ValueError`` on anything else.

    A deliberately small grammar (ASCII ``addr@domain`` with a dotted domain):
    what is checked against the allowlist is exactly what goes into the
    envelope and the headers, with no lenient parser in between.
    """
    if _CONTROL_RE.search(text):
        raise ValueError("addresses must be one line (no line breaks or control characters)")
    found: list[Address] = []
    for piece in _split_list(text):
        piece = piece.strip()
        if not piece:
            continue
        match = _NAMED_RE.match(piece)
        name, addr = (match.group("name").strip(), match.group("addr")) if match else ("", piece)
        if name.startswith('"'):
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        elif _NAME_SPECIALS.search(name):
            raise ValueError(f"`{piece}`: put a display name with @ ( ) , ; : < > [ ] in double quotes")
        if not _ADDR_RE.match(addr) or len(addr) > 254:
            raise ValueError(f"`{piece}` is not an email address like name@example.com")
        found.append(Address(display_name=name, addr_spec=addr))
    if not found:
        raise ValueError("no address given")
    return found


def message_id_for(idempotency_key: str) -> str:
    """``<KEY@kasloop>``: the same for every retry of one call, so the far side can spot a duplicate.

    Characters not allowed in a Message-ID are replaced, and a hash of the raw
    key is added when anything was replaced (two keys never share an id).
    Without a key (a direct call) a random id is made.
    """
    if not idempotency_key:
        return make_msgid(domain="kasloop")
    clean = _MSGID_UNSAFE.sub("-", idempotency_key).strip("-")[:120]
    if clean != idempotency_key:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        clean = f"{clean}-{digest}" if clean else digest
    return f"<{clean}@kasloop>"
