"""Secret redaction: configured secrets never reach the model, the database, the logs or the outputs.

kasloop knows which secrets an agent has: the OpenAI key, and every
environment variable a tool setting names (``password_env``, ``token_env``,
``secret_env``, with their defaults), plus any listed in ``secret_env``. Their
values are replaced by ``[redacted:NAME]`` wherever text enters kasloop:
the goal, ``tell`` and channel messages (before the inbox row is written),
the stored policy (config values), tool results (before the ledger, the event
log and the model see them), model replies and the arguments of proposed
calls (so a model that was tricked into writing a secret into an email sends
the placeholder instead), every event, JSON log lines and the HTML report.

A secret is caught however a tool or a model spells it:

* in clear, whole or cut short: any prefix of :data:`PREFIX_CHARS` or more
  characters (``sk-abcdef1234`` of ``sk-abcdef1234567890...``); a secret
  shorter than that only whole;
* hex-encoded (lower or upper case), the same prefixes included;
* base64-encoded, standard and URL-safe alphabet, with or without padding,
  and at each of the three byte alignments, so the base64 of a text that
  *contains* the secret (``base64 /proc/self/environ``) is caught too;
  base64 and hex broken into lines (``base64`` wraps at 76 columns,
  ``xxd -p`` at 60) are caught across the line breaks;
* ``%``-URL-encoded (upper- or lower-case escapes; ``+`` for spaces).

Values shorter than :data:`MIN_SECRET_CHARS` are ignored: redacting "abc"
everywhere would mangle ordinary text and protect nothing. Surrounding
whitespace of a value (a token file's final newline) is not part of the secret.

Speed: every tool result, model reply and event passes here, so the work per
text is small and precompiled (once per set of secrets, cached). The start of
every form (its encoded first :data:`PREFIX_CHARS` characters) is looked for
with CPython's substring search, one C call each, plus one regular expression
that only stops at line breaks (for wrapped base64 and hex); a text that holds
none is returned as it is. Each start found is then extended in Python along
its form. ``benchmarks/redaction.py`` measures it: one regex alternation of
every start, the obvious design, was 3-4x slower, because the regex engine
tries every branch at every position of the text.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus

from kasloop.safety.protected import setting_values


__all__ = [
    "DEFAULT_SECRET_ENVS", "MIN_SECRET_CHARS", "PREFIX_CHARS", "PROVIDER_KEY_ENVS", "Redactor", "RedactingFilter", "SecretSettings", "known_secrets", "protect_logs",
    "remember_secrets", "secret_names",
]

MIN_SECRET_CHARS = 6
PREFIX_CHARS = 12
"""A secret of at least this many characters is also redacted when cut after any of its later characters."""
DEFAULT_SECRET_ENVS = (
    "OPENAI_API_KEY",
    "KASLOOP_SMTP_PASSWORD",
    "KASLOOP_IMAP_PASSWORD",
    "KASLOOP_TELEGRAM_TOKEN",
    "KASLOOP_WEBHOOK_SECRET",
)
"""Variables the built-in tools and models read by default."""

PROVIDER_KEY_ENVS: dict[str, str] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "azure_openai": "AZURE_OPENAI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
    "google_genai": "GOOGLE_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistralai": "MISTRAL_API_KEY",
    "nvidia": "NVIDIA_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "perplexity": "PPLX_API_KEY",
    "together": "TOGETHER_API_KEY",
    "upstage": "UPSTAGE_API_KEY",
    "xai": "XAI_API_KEY",
}
"""The variable each model provider's client reads its key from when ``providers.NAME.api_key_env`` names
none: all of them are secrets, redacted everywhere, whichever provider the agent uses."""

T = TypeVar("T")
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


class SecretSettings(Protocol):
    """What redaction reads of a config (``kasloop.config.schema.AgentConfig`` has it): where the secrets are.

    A protocol, not the config class: redaction sits below the config, whose own checks use it."""

    @property
    def approval_channels(self) -> Any: ...  # a pydantic model: its ``*_env`` fields name secrets

    @property
    def tool_settings(self) -> dict[str, Any]: ...

    @property
    def secret_env(self) -> list[str]: ...

    @property
    def openai(self) -> Any: ...  # ``api_key``: a pydantic SecretStr or None

    @property
    def providers(self) -> dict[str, Any]: ...  # each ``api_key_env`` names a secret

    @property
    def mcp(self) -> dict[str, Any]: ...  # each server's ``env_from`` / ``headers_from`` values name secrets


def secret_names(config: SecretSettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Environment variables holding this agent's secrets: the defaults (model providers' keys included),
    every ``api_key_env`` of ``[providers]``, the variables MCP servers take secrets from, every ``*_env`` of the tool settings and the approval channels, ``secret_env``, and every ``KASLOOP_APPROVAL_*`` variable set."""
    env = os.environ if environ is None else environ
    channels = config.approval_channels.model_dump(mode="json")
    approvals = sorted(name for name in env if name.startswith("KASLOOP_APPROVAL_"))
    providers = [s.api_key_env for s in config.providers.values() if s.api_key_env]
    providers += [name for server in config.mcp.values() for name in (*server.env_from.values(), *server.headers_from.values())]
    names = [
        *DEFAULT_SECRET_ENVS, *PROVIDER_KEY_ENVS.values(), *providers, *setting_values(config.tool_settings, "_env"),
        *setting_values(channels, "_env"), *approvals, *config.secret_env,
    ]
    return list(dict.fromkeys(names))


# -- the forms a secret takes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Form:
    """One spelling of one secret."""

    text: str
    """The whole secret in this encoding."""
    anchor: int
    """How many of its first characters a match needs (the encoded :data:`PREFIX_CHARS`, or all of it)."""
    name: str
    lines: bool = False
    """base64 and hex: a tool may break it into lines, so a line break may fall anywhere inside it."""
    tail: bool = False
    """base64: a last character mixing the secret's final bits with what follows, then padding, may follow."""


def _forms(name: str, value: str) -> list[_Form]:
    """Every form of one secret: clear, %-encoded, hex, base64 (two alphabets, three alignments)."""
    head = value[:PREFIX_CHARS] if len(value) >= PREFIX_CHARS else value
    forms = [_Form(value, len(head), name)]
    encoders = (
        functools.partial(quote, safe="", errors="surrogatepass"),
        functools.partial(quote, safe="/", errors="surrogatepass"),
        functools.partial(quote_plus, safe="", errors="surrogatepass"),
    )
    for encode in encoders:
        upper = encode(value)
        lower = _PERCENT.sub(lambda m: m.group().lower(), upper)
        forms += [_Form(q, len(encode(head)), name) for q in (upper, lower)]
    raw, raw_head = value.encode("utf-8", "surrogatepass"), len(head.encode("utf-8", "surrogatepass"))
    forms += [_Form(raw.hex(), 2 * raw_head, name, lines=True), _Form(raw.hex().upper(), 2 * raw_head, name, lines=True)]
    for shift in range(3):  # the secret starts at byte 0, 1 or 2 of a 3-byte base64 group
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        start = -(-8 * shift // 6)  # the first character with none of the bytes before the secret
        end = 8 * (shift + len(raw)) // 6  # past the last character with none of the bytes after it
        core, anchor, tail = encoded[start:end], 8 * (shift + raw_head) // 6 - start, (8 * (shift + len(raw))) % 6 != 0
        urlsafe = core.replace("+", "-").replace("/", "_")
        forms += [_Form(c, anchor, name, lines=True, tail=tail) for c in dict.fromkeys((core, urlsafe))]
    unique: dict[str, _Form] = {}
    for form in forms:
        unique.setdefault(form.text, form)
    return list(unique.values())


def _trie(words: Iterable[str]) -> str:
    """A regular expression matching the longest of ``words`` at a position, branching once per character."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here; a longer one may go on
            body = f"(?:{body})?" if len(branches) == 1 else body + "?"
        return body

    return build(root)


class _Matcher:
    """The precompiled search for one set of secrets (built once per set: see ``_matcher``)."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self.starts: dict[str, list[_Form]] = {}
        """The first ``anchor`` characters of a form → the forms starting so."""
        self.broken: dict[str, list[tuple[_Form, int]]] = {}
        """``"\\n"`` + what follows a line break at offset ``cut`` of a form → (form, cut)."""
        for value, name in pairs:
            for form in _forms(name, value):
                self.starts.setdefault(form.text[: form.anchor], []).append(form)
                for cut in range(1, form.anchor) if form.lines else ():
                    piece = form.text[cut : cut + form.anchor]
                    if len(piece) >= min(form.anchor, 8):
                        self.broken.setdefault("\n" + piece, []).append((form, cut))
        self.anchors = tuple(self.starts)
        self.broken_lengths = sorted({len(key) for key in self.broken}, reverse=True)
        self.after_break = re.compile(_trie(self.broken)) if self.broken else None
        """``\\n`` + pieces: it starts with a literal, so the regex engine jumps from line break to line break."""

    def finds(self, text: str) -> bool:
        for anchor in self.anchors:
            if anchor in text:
                return True
        return self.after_break is not None and "\n" in text and self.after_break.search(text) is not None

    def redact(self, text: str) -> str:
        # CPython's substring search, one C call per form start, is several times faster than one regex
        # alternation of them all (the regex engine tries every branch at every position of the text).
        hits = [anchor for anchor in self.anchors if anchor in text]
        broken = self.after_break is not None and "\n" in text and self.after_break.search(text) is not None
        if not hits and not broken:
            return text
        spans: list[tuple[int, int, str]] = []
        for anchor in hits:
            at = text.find(anchor)
            while at >= 0:
                end, name = max((_extend(text, at + len(anchor), form, len(anchor)), form.name) for form in self.starts[anchor])
                spans.append((at, end, name))
                at = text.find(anchor, at + 1)
        if broken:
            assert self.after_break is not None
            for match in self.after_break.finditer(text):
                span = self._after_break(text, match.start(), match.group())
                if span is not None:
                    spans.append(span)
        spans.sort(key=lambda span: (span[0], -span[1]))
        out: list[str] = []
        done = 0
        for start, end, name in spans:
            if end <= done:
                continue  # inside a stretch already redacted
            out += [text[done:max(start, done)], f"[redacted:{name}]"]
            done = end
        out.append(text[done:])
        return "".join(out)

    def _after_break(self, text: str, at: int, found: str) -> tuple[int, int, str] | None:
        """The stretch a form broken by the line break at ``at`` covers (start, end, secret name), or None."""
        best: tuple[int, int, str] | None = None
        for length in self.broken_lengths:
            for form, cut in self.broken.get(found[:length], ()) if length <= len(found) else ():
                end = _extend(text, at + length, form, cut + length - 1)
                head = at - 1 if at > 0 and text[at - 1] == "\r" else at
                if head >= cut and text.startswith(form.text[:cut], head - cut):
                    start = head - cut  # the first part, before the break, is there too
                elif end - at - 1 >= form.anchor:
                    start = at + 1  # a whole start's worth of the secret after the break
                else:
                    continue
                if best is None or end - start > best[1] - best[0]:
                    best = (start, end, form.name)
        return best


def _extend(text: str, i: int, form: _Form, k: int) -> int:
    """Where a match of ``form`` ends, having matched it up to ``k`` at ``text[i]`` (line breaks skipped where allowed)."""
    rest = form.text[k:]
    if text.startswith(rest, i):
        i += len(rest)
    else:
        size, whole = len(text), form.text
        while k < len(whole):
            if i < size and text[i] == whole[k]:
                i, k = i + 1, k + 1
            elif form.lines and text.startswith("\n", i) and text.startswith(whole[k], i + 1):
                i += 1
            elif form.lines and text.startswith("\r\n", i) and text.startswith(whole[k], i + 2):
                i += 2
            else:
                return i
    if form.tail and i < len(text) and text[i] in _B64_CHARS:
        i += 1
    while form.tail and text.startswith("=", i):
        i += 1
    return i


@functools.lru_cache(maxsize=64)
def _matcher(pairs: tuple[tuple[str, str], ...]) -> _Matcher:
    return _Matcher(pairs)


# -- the redactor ---------------------------------------------------------------------------------


class Redactor:
    """Replaces known secret values with ``[redacted:NAME]`` in text and in JSON-like values.

    Every form of every secret (see the module docstring) is found; a text that holds none costs one
    substring search per form start and is returned as it is.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        pairs: dict[str, str] = {}
        for name, value in secrets.items():
            value = (value or "").strip()
            if len(value) >= MIN_SECRET_CHARS:
                pairs[value] = name
        self._set(pairs)

    def _set(self, pairs: Mapping[str, str]) -> None:
        # A canonical order (the compiled search is cached per set); overlapping matches are merged, so a
        # secret that contains another is replaced whole whatever the order.
        self._pairs = tuple(sorted(pairs.items(), key=lambda pair: (-len(pair[0]), pair[0])))
        self._matcher = _matcher(self._pairs) if self._pairs else None

    @classmethod
    def for_config(cls, config: SecretSettings, environ: Mapping[str, str] | None = None) -> Redactor:
        env = os.environ if environ is None else environ
        secrets = {name: env[name] for name in secret_names(config, env) if env.get(name)}
        if config.openai.api_key is not None:
            secrets["openai.api_key"] = config.openai.api_key.get_secret_value()
        return cls(secrets)

    def merged(self, other: Redactor) -> Redactor:
        both = Redactor({})
        both._set(dict([*self._pairs, *other._pairs]))
        return both

    @property
    def longest(self) -> int:
        """The length of the longest secret (what a stream of text chunks holds back, see ``TextRedactor``)."""
        return max((len(value) for value, _ in self._pairs), default=0)

    @property
    def names(self) -> list[str]:
        """The names of the secrets (never their values)."""
        return sorted({name for _, name in self._pairs})

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __repr__(self) -> str:
        return f"Redactor(names={self.names})"

    def finds(self, text: str) -> bool:
        """Does ``text`` hold (the start of) a secret in any form?"""
        return self._matcher is not None and self._matcher.finds(text)

    def text(self, text: str) -> str:
        if self._matcher is None:
            return text
        return self._matcher.redact(text)

    def deep(self, value: T) -> T:
        """``value`` with every string inside it (dict keys included) redacted."""
        if self._matcher is None:
            return value
        if isinstance(value, str):
            return self._matcher.redact(value)  # type: ignore[return-value]
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}  # type: ignore[return-value]
        if isinstance(value, list | tuple):
            return type(value)(self.deep(v) for v in value)  # type: ignore[return-value]
        return value


# -- every secret this process knows --------------------------------------------------------------

_remembered: dict[str, str] = {}
_known: tuple[tuple[Any, ...], Redactor] | None = None


def remember_secrets(redactor: Redactor) -> None:
    """Add ``redactor``'s secrets to :func:`known_secrets` (for every store and log of this process)."""
    global _known
    if any(_remembered.get(value) != name for value, name in redactor._pairs):
        _remembered.update(redactor._pairs)
        _known = None


def known_secrets() -> Redactor:
    """Every secret this process knows: the default variables' current values and every agent's secrets
    (remembered when its graph was built, or by ``Agent.run`` / ``tell``).

    The tables (threads, events, inbox), the JSON log lines and the report redact with this as their
    last gate, whoever writes to them (a channel receiver builds no graph).
    """
    global _known
    env = tuple(os.environ.get(name) for name in DEFAULT_SECRET_ENVS)
    if _known is None or _known[0] != env:
        current = Redactor({name: value for name, value in zip(DEFAULT_SECRET_ENVS, env, strict=True) if value})
        extra = Redactor({})
        extra._set({**_remembered, **dict(current._pairs)})
        _known = (env, extra)
    return _known[1]


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's final message (install it on the ``kasloop`` logger's handlers
    or on the logger itself). Without a redactor it uses :func:`known_secrets`."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self.redactor if self.redactor is not None else known_secrets()
        if redactor:
            message = record.getMessage()
            cleaned = redactor.text(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_LOG_FILTER = RedactingFilter()
LOGGERS = ("kasloop", "kasloop.events", "kasloop.tools", "kasloop.tools.browser", "kasloop.tools.telegram", "kasloop.runtime")
"""kasloop's loggers (a logger's filters do not apply to its children's records, so each gets one)."""


def protect_logs(redactor: Redactor) -> None:
    """Redact ``redactor``'s secrets from every record of kasloop's loggers and from every table this process
    writes (for every agent in this process)."""
    remember_secrets(redactor)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)
