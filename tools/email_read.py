"""The ``email`` family's IMAP side: sessions, search, fetch, parsing, and taking unread mail.

Every value the model writes is sent as an IMAP quoted string or a counted literal
(:func:`imap_quote`, :func:`search_criteria`), never as syntax; reading opens the
folder read-only and fetches with ``BODY.PEEK`` (see :mod:`kasloop.tools.email`).
:func:`_imap_session` and :func:`take_unread` serve the approvals mailbox
(:mod:`kasloop.channels.email`) and the inbox feed (:mod:`kasloop.channels.email_inbox`) too.
"""

from __future__ import annotations

import base64
import imaplib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, TypeVar

from kasloop.config.mail import CONTROL_CHARS as _CONTROL_RE
from kasloop.config.mail import ImapSettings
from kasloop.tools.base import ToolFailure
from kasloop.tools.email_addresses import parse_addresses
from kasloop.tools.email_connection import _network, _network_failure, _reply_text, _server_addresses, _tls
from kasloop.tools.http import html_to_text
from kasloop.tools.network import IPAddress, NetworkGate, connect_pinned

if TYPE_CHECKING:
    from kasloop.tools.email import IdArgs, MarkArgs, SearchArgs

__all__ = [
    "MAX_SEARCH_TERMS",
    "_do_mark",
    "_do_read",
    "_do_search",
    "_has_message_id",
    "_imap_session",
    "imap_quote",
    "search_criteria",
    "search_terms",
    "take_unread",
]

T = TypeVar("T")

MAX_SEARCH_TERMS = 10


# --------------------------------------------------------------------------- IMAP: quoting and criteria


def _imap_utf7(name: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7, the encoding of non-ASCII folder names."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{encoded}-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def imap_quote(text: str) -> bytes:
    """An IMAP quoted string: backslash and double quote escaped; only printable ASCII allowed inside."""
    if any(not 0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError("an IMAP quoted string holds printable ASCII only")
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def _folder_arg(folder: str) -> bytes:
    if not folder.strip() or _CONTROL_RE.search(folder) or len(folder) > 200:
        raise ToolFailure("bad_args", f"`{folder}` is not a folder name; use e.g. INBOX")
    return imap_quote(_imap_utf7(folder))


_TERM_RE = re.compile(r'(?:(?P<key>from|to|cc|subject|body):)?(?:"(?P<phrase>[^"]*)"|(?P<word>\S+))', re.IGNORECASE)
_KEYS = {"from": b"FROM", "to": b"TO", "cc": b"CC", "subject": b"SUBJECT", "body": b"BODY", None: b"TEXT"}


def search_terms(query: str) -> list[tuple[bytes, str]]:
    """``from:alice "big invoice" march`` → ``[(FROM, alice), (TEXT, big invoice), (TEXT, march)]``.

    Control characters (CR, LF, NUL...) become spaces: they are never sent.
    """
    text = _CONTROL_RE.sub(" ", query)
    terms: list[tuple[bytes, str]] = []
    for match in _TERM_RE.finditer(text):
        key = match.group("key")
        value = (match.group("phrase") if match.group("phrase") is not None else match.group("word")).strip()
        if value:
            terms.append((_KEYS[key.lower() if key else None], value[:200]))
    return terms


def search_criteria(query: str, *, unseen_only: bool, literal_plus: bool) -> tuple[list[bytes], bytes | None]:
    """IMAP SEARCH arguments for ``query``, plus at most one synchronising literal (sent last by imaplib).

    Every value is a quoted string (ASCII) or a counted literal (non-ASCII,
    with ``CHARSET UTF-8``): nothing the model writes is ever read as syntax.
    With ``LITERAL+``/``LITERAL-`` non-ASCII values are inline ``{n+}`` literals;
    without, imaplib can send only one literal, so only one non-ASCII term is allowed.
    """
    terms = search_terms(query)
    if len(terms) > MAX_SEARCH_TERMS:
        raise ToolFailure("bad_args", f"the query has {len(terms)} terms; use at most {MAX_SEARCH_TERMS}")
    ascii_terms = [(k, v) for k, v in terms if v.isascii()]
    wide_terms = [(k, v) for k, v in terms if not v.isascii()]
    args: list[bytes] = [b"CHARSET", b"UTF-8"] if wide_terms else []
    if unseen_only:
        args.append(b"UNSEEN")
    for key, value in ascii_terms:
        args += [key, imap_quote(value)]
    literal: bytes | None = None
    if wide_terms and not literal_plus and len(wide_terms) > 1:
        raise ToolFailure("bad_args", "this server accepts only one non-ASCII search term per query; drop the others")
    for key, value in wide_terms:
        data = value.encode("utf-8")
        if literal_plus:
            args += [key, b"{%d+}\r\n" % len(data) + data]
        else:
            args.append(key)
            literal = data
    if not terms and not unseen_only:
        args.append(b"ALL")
    return args, literal


# --------------------------------------------------------------------------- IMAP: connection


class _PinnedIMAP4(imaplib.IMAP4):
    """imaplib's client connecting to addresses the network gate checked (STARTTLS still checks the name)."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, timeout: float) -> None:
        self.addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        return connect_pinned(self.addresses, self.port, timeout)


class _PinnedIMAP4SSL(imaplib.IMAP4_SSL):
    """Implicit TLS over the pinned connection, wrapped with the server's name as ``IMAP4_SSL`` does."""

    def __init__(self, addresses: tuple[IPAddress, ...], host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        self.addresses = addresses
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        return self.ssl_context.wrap_socket(connect_pinned(self.addresses, self.port, timeout), server_hostname=self.host)


def _imap_session(cfg: ImapSettings, password: str, work: Callable[[imaplib.IMAP4], T], network: NetworkGate | None = None) -> T:
    """Connect (through the network gate; default: this process's receivers), secure, log in, run ``work``, log out;
    every failure becomes a ``ToolFailure``."""
    where = f"IMAP server {cfg.host}:{cfg.effective_port}"
    stage = "connect"
    conn: imaplib.IMAP4 | None = None
    try:
        context = _tls(cfg, "imap") if cfg.security != "plain" else None
        addresses = _server_addresses(network or _network("imap"), cfg, "imap", cfg.effective_port)
        if cfg.security == "ssl":
            conn = _PinnedIMAP4SSL(addresses, cfg.host, cfg.effective_port, ssl_context=context, timeout=cfg.timeout)
        else:
            conn = _PinnedIMAP4(addresses, cfg.host, cfg.effective_port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                if "STARTTLS" not in conn.capabilities:
                    raise ToolFailure("permanent", f"{where} does not offer STARTTLS; set email.imap.security to `ssl` or `plain` to match the server")
                conn.starttls(ssl_context=context)
        stage = "login"
        assert cfg.username is not None
        conn.login(cfg.username, password)
        stage = "work"
        return work(conn)
    except ToolFailure:
        raise
    except imaplib.IMAP4.abort as exc:
        raise ToolFailure("transient", f"{where} dropped the connection ({_reply_text(exc)}); try again") from None
    except imaplib.IMAP4.error as exc:
        if stage == "login":
            raise ToolFailure("denied", f"{where} refused the login of `{cfg.username}` ({_reply_text(exc)}); check email.imap.username and ${cfg.password_env}") from None
        raise ToolFailure("permanent", f"{where}: {_reply_text(exc)} (during {stage})") from None
    except UnicodeEncodeError:
        raise ToolFailure("permanent", f"the username or password for {where} is not ASCII; IMAP LOGIN needs ASCII") from None
    except OSError as exc:
        raise _network_failure(exc, where, "imap") from None
    finally:
        if conn is not None:
            _close_imap(conn)


def _close_imap(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        try:
            conn.shutdown()
        except OSError:
            pass


def _open_folder(conn: imaplib.IMAP4, folder: str, *, readonly: bool) -> None:
    """SELECT (or read-only EXAMINE) a folder; imaplib sends the name as given, so it is quoted here."""
    try:
        typ, data = conn.select(_folder_arg(folder).decode("ascii"), readonly=readonly)
    except imaplib.IMAP4.readonly:
        raise ToolFailure("permanent", f"folder `{folder}` is read-only on this server; flags cannot be changed there") from None
    if typ != "OK":
        raise ToolFailure("bad_args", f"cannot open folder `{folder}` ({_reply_text(data[-1] if data else typ)}); INBOX always exists")


def _check(typ: str, data: list[Any], what: str) -> None:
    if typ != "OK":
        raise ToolFailure("permanent", f"the IMAP server refused {what}: {_reply_text(data[-1] if data else typ)}")


# --------------------------------------------------------------------------- IMAP: fetch answers and headers


@dataclass
class _Fetched:
    uid: int
    flags: tuple[str, ...]
    size: int | None
    body: bytes


_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def _flags(raw: bytes) -> tuple[str, ...]:
    """Flags as the model should see them; ``\\Recent`` is session state, not the message's."""
    return tuple(f for f in raw.decode("ascii", "replace").split() if f != "\\Recent")


def _parse_fetch(data: list[Any]) -> list[_Fetched]:
    """imaplib's FETCH answer (tuples of meta + literal, then closing bytes) → one entry per message."""
    found: list[_Fetched] = []
    for item in data:
        if isinstance(item, tuple):
            meta, body = item[0], item[1]
        elif isinstance(item, bytes) and _UID_RE.search(item):
            meta, body = item, b""
        else:
            if isinstance(item, bytes) and found:  # the part after a literal may carry FLAGS
                flags = _FLAGS_RE.search(item)
                if flags and not found[-1].flags:
                    found[-1].flags = _flags(flags.group(1))
            continue
        uid = _UID_RE.search(meta)
        if uid is None:
            continue
        flags = _FLAGS_RE.search(meta)
        size = _SIZE_RE.search(meta)
        found.append(
            _Fetched(
                uid=int(uid.group(1)),
                flags=_flags(flags.group(1)) if flags else (),
                size=int(size.group(1)) if size else None,
                body=body,
            )
        )
    return found


def _header(msg: Message, name: str) -> str:
    """A header decoded to one line of text; a malformed one (mail comes from strangers) is shown raw."""
    try:
        value = str(msg.get(name) or "")
    except Exception:  # noqa: BLE001 - the header parser must not break reading
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
        try:
            value = str(make_header(decode_header(raw)))
        except Exception:  # noqa: BLE001
            value = str(raw)
    return " ".join(_CONTROL_RE.sub(" ", value).split())


def _date(msg: Message, fmt: str) -> str:
    raw = _header(msg, "Date")
    try:
        return parsedate_to_datetime(raw).strftime(fmt) if raw else "(no date)"
    except (TypeError, ValueError, IndexError):
        return raw


def _parse(data: bytes) -> Message:
    return BytesParser(policy=email_policy.default).parsebytes(data)


# --------------------------------------------------------------------------- IMAP tools


def _do_search(conn: imaplib.IMAP4, args: SearchArgs) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=True)
    caps = {c.upper() for c in conn.capabilities}
    criteria, literal = search_criteria(args.query, unseen_only=args.unseen_only, literal_plus=bool(caps & {"LITERAL+", "LITERAL-"}))
    if literal is not None:
        conn.literal = literal
    typ, data = conn.uid("SEARCH", *criteria)
    _check(typ, data, "the search")
    uids = sorted({int(u) for u in b" ".join(d for d in data if isinstance(d, bytes)).split()})
    total = len(uids)
    chosen = list(reversed(uids[-args.limit :]))
    if not chosen:
        return f"No messages in {args.folder} match `{args.query}`.", {"folder": args.folder, "total": 0, "uids": []}
    typ, data = conn.uid("FETCH", ",".join(map(str, chosen)), "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
    _check(typ, data, "fetching the headers")
    by_uid = {f.uid: f for f in _parse_fetch(data)}
    lines = [f"{total} message(s) in {args.folder} match; newest {len(chosen)} (id | date | from | subject):"]
    for uid in chosen:
        fetched = by_uid.get(uid)
        if fetched is None:
            continue
        msg = _parse(fetched.body)
        unseen = "" if "\\Seen" in fetched.flags else " [unseen]"
        lines.append(f"{uid} | {_date(msg, '%Y-%m-%d %H:%M')} | {_header(msg, 'From') or '(no sender)'} | {_header(msg, 'Subject') or '(no subject)'}{unseen}")
    return "\n".join(lines), {"folder": args.folder, "total": total, "uids": chosen}


def _attachment_lines(msg: Message) -> list[str]:
    lines = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if part.get_content_disposition() != "attachment" and not name:
            continue
        payload = part.get_payload(decode=True) or b""
        lines.append(f"{name or '(unnamed)'} ({part.get_content_type()}, {len(payload)} bytes)")
    return lines


def _body_text(msg: Message) -> str:
    body = msg.get_body(preferencelist=("plain", "html")) if hasattr(msg, "get_body") else None
    if body is None:
        return "(no text body)"
    try:
        text = body.get_content()
    except (LookupError, ValueError, AssertionError):
        raw = body.get_payload(decode=True) or b""
        text = raw.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return "(no text body)"
    if body.get_content_type() == "text/html":
        return html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def _do_read(conn: imaplib.IMAP4, args: IdArgs, limit: int) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=True)
    typ, data = conn.uid("FETCH", str(args.id), f"(UID FLAGS RFC822.SIZE BODY.PEEK[]<0.{limit}>)")
    _check(typ, data, "fetching the message")
    found = [f for f in _parse_fetch(data) if f.uid == args.id]
    if not found:
        raise ToolFailure("bad_args", f"no message with id {args.id} in {args.folder}; find ids with email_search")
    fetched = found[0]
    msg = _parse(fetched.body)
    cut = fetched.size is not None and fetched.size > len(fetched.body)
    headers = {name: _header(msg, name) for name in ("From", "To", "Cc", "Subject", "Message-ID")}
    headers["Date"] = _date(msg, "%Y-%m-%d %H:%M %z")
    lines = [f"{name}: {headers[name]}" for name in ("From", "To", "Cc", "Date", "Subject", "Message-ID") if headers[name]]
    lines.append(f"Flags: {' '.join(fetched.flags) or '(none)'}")
    attachments = _attachment_lines(msg)
    if attachments:
        lines.append("Attachments: " + "; ".join(attachments))
    if cut:
        lines.append(f"[message is {fetched.size} bytes; only the first {len(fetched.body)} were read (email.max_read_bytes)]")
    text = "\n".join(lines) + "\n\n" + _body_text(msg)
    return text, {"folder": args.folder, "id": args.id, "flags": list(fetched.flags), "bytes": fetched.size, "attachments": attachments, "truncated": cut}


def _do_mark(conn: imaplib.IMAP4, args: MarkArgs) -> tuple[str, dict[str, Any]]:
    _open_folder(conn, args.folder, readonly=False)
    typ, data = conn.uid("FETCH", str(args.id), "(UID FLAGS)")
    _check(typ, data, "looking up the message")
    if not any(f.uid == args.id for f in _parse_fetch(data)):
        raise ToolFailure("bad_args", f"no message with id {args.id} in {args.folder}; find ids with email_search")
    typ, data = conn.uid("STORE", str(args.id), "+FLAGS.SILENT" if args.seen else "-FLAGS.SILENT", "(\\Seen)")
    _check(typ, data, "changing the flag")
    state = "seen" if args.seen else "unseen"
    return f"Marked message {args.id} in {args.folder} as {state}.", {"folder": args.folder, "id": args.id, "seen": args.seen}


def _has_message_id(conn: imaplib.IMAP4, folder: str, msg_id: str) -> bool:
    _open_folder(conn, folder, readonly=True)
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", imap_quote(msg_id))
    _check(typ, data, "looking for the Message-ID")
    return bool(b" ".join(d for d in data if isinstance(d, bytes)).split())


# --------------------------------------------------------------------------- unread mail (the approvals mailbox, the inbox feed)


def take_unread(
    conn: imaplib.IMAP4, folder: str, *, max_bytes: int, senders: list[str] | None = None, criteria: tuple[str, ...] = ("UNSEEN",),
) -> list[tuple[str, str, str, str]]:
    """``(sender, subject, body, message id)`` of the unread mail matching ``criteria``; each one taken is marked read.

    With ``senders`` (address globs) only their mail is taken and the rest is left unread (another
    reader may want it); without, every match is taken. The sender is ``""`` when the From header
    does not parse (mail comes from strangers). A message over ``max_bytes`` is taken unread.
    """
    _open_folder(conn, folder, readonly=False)
    typ, data = conn.uid("SEARCH", *criteria)
    _check(typ, data, "searching for new mail")
    found: list[tuple[str, str, str, str]] = []
    for uid in [u.decode() for d in data if isinstance(d, bytes) for u in d.split()]:
        typ, data = conn.uid("FETCH", uid, "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM)])")
        _check(typ, data, "reading a sender")
        fetched = _parse_fetch(data)
        try:
            senders_found = parse_addresses(_header(_parse(fetched[0].body), "From")) if fetched else []
        except ValueError:
            senders_found = []
        sender = senders_found[0].addr_spec.lower() if len(senders_found) == 1 else ""
        if senders is not None and (not sender or not any(fnmatchcase(sender, p) for p in senders)):
            continue
        if fetched and fetched[0].size is not None and fetched[0].size > max_bytes:
            conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
            found.append((sender, "(too large)", f"A message of {fetched[0].size} bytes was not read (email.max_read_bytes).", ""))
            continue
        typ, data = conn.uid("FETCH", uid, "(UID BODY.PEEK[])")
        _check(typ, data, "reading new mail")
        msg = _parse(_parse_fetch(data)[0].body)
        found.append((sender, _header(msg, "Subject"), _body_text(msg), _header(msg, "Message-ID")))
        conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
    return found
