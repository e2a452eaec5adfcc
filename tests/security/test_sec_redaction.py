"""Secrets never reach the database, the logs or the outputs, in any spelling (issue 14, item 7).

Reproduction (item 8): a configured secret written in the goal text was stored and printed in clear (the
``goal`` event, the JSON log, the HTML report, the checkpoints, the threads table); ``tell`` text was
redacted in the thread's history but kept raw in the inbox table, read or not; a secret base64- or
hex-encoded, or cut after 12 characters, was not redacted anywhere.

The end-to-end scenario drives the real CLI (``KASLOOP_LOG=json``) with a scripted model. Every input
channel carries its own secret, each in every spelling (clear, 12- and 20-character prefixes, base64 in
both alphabets at the three byte alignments with and without padding, base64 and hex of a prefix, hex
lower and upper, %-encoded): the goal, a config value (``system_prompt``), a tool's output, a tool call's
arguments, a model reply, a model error, ``kasloop tell``, and a channel message (a receiver's inbox
put). Afterwards every output is scanned for every spelling: the database and WAL files' raw bytes, every
row and column of every table, the JSON log lines, everything the CLI printed, the HTML report and the
files the tools wrote, and every checkpoint decoded by the saver's serializer. Positive control: a non-secret marker, put in the very same places in the very
same spellings, is found by the same scan.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from kasloop import AgentConfig
from kasloop.checkpoints import Inbox, open_database
from kasloop.checkpoints.serde import MessageCachingSerializer
from kasloop.support.logs import JsonFormatter
from kasloop.reporting.report import render_report
from kasloop.safety.secrets import MIN_SECRET_CHARS, PREFIX_CHARS, Redactor, known_secrets, protect_logs
from conftest import CLIResult, call, cli_runner, write_script

RNG = random.Random(14_07)
CHANNELS = ("goal", "config", "tool_output", "tool_args", "model_reply", "model_error", "tell", "inbox")


def _b64(data: bytes, urlsafe: bool, padded: bool) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return text if padded else text.rstrip("=")


def _core(data_before: int, value: bytes, urlsafe: bool) -> str:
    """The base64 characters that depend on ``value`` only, when ``data_before`` bytes precede it."""
    encoded = _b64(b"x" * data_before + value, urlsafe, True)
    return encoded[-(-8 * data_before // 6) : 8 * (data_before + len(value)) // 6]


def _token(prefix: str, length: int = 40) -> str:
    """A random value with a ``:`` and a ``/`` (so %-encoding differs from the clear text) whose base64, at
    every alignment, holds ``+`` or ``/`` (so the URL-safe alphabet differs)."""
    while True:
        body = "".join(RNG.choice(string.ascii_letters + string.digits + "~?") for _ in range(length))  # ASCII letters and digits alone never give + or /
        value = f"{prefix}{body[:10]}:{body[10:20]}/{body[20:]}"
        if all(set(_core(shift, value.encode(), False)) & set("+/") for shift in range(3)):
            return value


SECRETS = {channel: _token(f"sk-{channel[:3]}-") for channel in CHANNELS}
MARKERS = {channel: _token(f"MARK-{channel[:3]}-") for channel in CHANNELS}
ENV_NAMES = {channel: f"KASLOOP_TEST_SECRET_{channel.upper()}" for channel in CHANNELS}
ENV_NAMES["goal"] = "OPENAI_API_KEY"  # a default secret, known without any config


def spellings(value: str) -> dict[str, tuple[str, str]]:
    """label → (how the input spells it, the substring of that spelling a leak would show)."""
    raw, head = value.encode(), value[:PREFIX_CHARS].encode()
    found: dict[str, tuple[str, str]] = {
        "clear": (value, value),
        "prefix-12": (value[:PREFIX_CHARS], value[:PREFIX_CHARS]),
        "prefix-20": (value[:20], value[:20]),
        "hex": (raw.hex(), raw.hex()),
        "HEX": (raw.hex().upper(), raw.hex().upper()),
        "hex-prefix-12": (head.hex(), head.hex()),
        "percent": (quote(value, safe=""), quote(value, safe="")),
        "base64-prefix-12": (_b64(head, False, True), _core(0, head, False)),
    }
    for shift, before in enumerate((b"", b"K", b"K=")):  # the secret at byte 0, 1 and 2 of a base64 group
        for urlsafe in (False, True):
            for padded in (True, False) if shift == 0 else (True,):
                label = f"base64{'-urlsafe' if urlsafe else ''}-at{shift}{'' if padded else '-nopad'}"
                found[label] = (_b64(before + raw + b"\n", urlsafe, padded), _core(shift, raw, urlsafe))
    return found


SPELLINGS = list(spellings(SECRETS["goal"]))


def spelled(value: str) -> str:
    return "\n".join(f"{label}: {text}" for label, (text, _) in spellings(value).items())


def carrying(channel: str) -> str:
    """What one channel carries: its secret and its marker in every spelling."""
    return f"{channel} secret:\n{spelled(SECRETS[channel])}\n{channel} marker:\n{spelled(MARKERS[channel])}"


# --------------------------------------------------------------------------- the scenario, run once


def _outputs(folder: Path, printed: list[CLIResult]) -> dict[str, bytes]:
    """Every place a secret could have gone: corpus name → bytes."""
    home = folder / ".kasloop"
    corpora: dict[str, bytes] = {}
    files = sorted(p for p in home.rglob("*") if p.is_file())
    # The database with its -wal and -shm files (written rows may still be in the WAL only), then every other file.
    corpora["database files"] = b"".join(p.read_bytes() for p in files if p.name.startswith("kasloop.db"))
    for path in files:
        corpora[f"file {path.relative_to(folder)}"] = path.read_bytes()  # report, locks, the inbox signal...
    conn = sqlite3.connect(home / "kasloop.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cells = []
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        cells.append(value.encode())
                    elif isinstance(value, bytes):
                        cells.append(value)  # checkpoint blobs: msgpack keeps strings as their UTF-8 bytes
            corpora[f"table {table}"] = b"\x00".join(cells)  # a row's value whole, even when the file splits it over pages
        serde, decoded = MessageCachingSerializer(), []
        for table, column in (("checkpoints", "checkpoint"), ("writes", "value")):
            for kind, blob in conn.execute(f"SELECT type, {column} FROM {table}"):
                decoded.append(repr(serde.loads_typed((kind, blob))).encode())  # the saver's own decoding
        corpora["checkpoints, decoded"] = b"\x00".join(decoded)
    finally:
        conn.close()
    corpora["json logs"] = "\n".join(r.err for r in printed).encode()
    corpora["cli output"] = "\n".join(r.out for r in printed).encode()
    for path in sorted((folder / "ws").rglob("*")):
        if path.is_file() and path.name != "data.txt":  # data.txt is the input the tool reads
            corpora[f"workspace {path.name}"] = path.read_bytes()
    return corpora


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("redaction")
    workspace = folder / "ws"
    workspace.mkdir()
    (workspace / "data.txt").write_text(carrying("tool_output"))
    script = write_script(folder / "script.jsonl", [
        {"content": "", "tool_calls": [call("files_read", path="data.txt")]},
        {"content": "", "tool_calls": [call("files_write", path="notes.txt", content=carrying("tool_args"))]},
        {"error": carrying("model_error")},
        {"content": carrying("model_reply")},
        {"content": "read the messages"},
    ])
    secret_env = [name for name in ENV_NAMES.values() if name != "OPENAI_API_KEY"]
    (folder / "kasloop.toml").write_text(
        f"autonomy = 4\ntools = [\"files\"]\nworkspace = \"ws\"\nmodel = \"scripted:{script}\"\n"
        f"secret_env = {json.dumps(secret_env)}\nsystem_prompt = {json.dumps(carrying('config'))}\n"
    )
    env = {"KASLOOP_LOG": "json", **{ENV_NAMES[c]: SECRETS[c] for c in CHANNELS}}
    kasloop = cli_runner(folder, env)
    printed = [kasloop("run", carrying("goal"), "--thread", "t1", "--json")]
    assert printed[-1].code == 0, printed[-1]
    printed.append(kasloop("tell", "t1", carrying("tell")))
    assert printed[-1].code == 0, printed[-1]

    async def receive() -> None:
        """A channel receiver (Telegram, email, webhook) delivering a message: it passes its agent's secrets."""
        redactor = Redactor.for_config(AgentConfig(secret_env=secret_env), environ={ENV_NAMES[c]: SECRETS[c] for c in CHANNELS})
        async with open_database(folder / ".kasloop" / "kasloop.db") as db:
            await Inbox(db, redactor).put("t1", "telegram", carrying("inbox"), sender=MARKERS["inbox"])

    asyncio.run(receive())
    printed.append(kasloop("resume", "t1", "--json"))
    assert printed[-1].code == 0 and printed[-1].json()["output"] == "read the messages", printed[-1]
    printed += [kasloop("history", "t1", "--json"), kasloop("status", "t1", "--json"), kasloop("report", "t1", "--out", str(folder / ".kasloop" / "report.html"))]
    assert all(r.code == 0 for r in printed), printed
    yield {"folder": folder, "outputs": _outputs(folder, printed), "printed": printed}


def _where(needle: str, outputs: dict[str, bytes]) -> list[str]:
    return [name for name, data in outputs.items() if needle.encode() in data]


# --------------------------------------------------------------------------- end to end


LEAK_CHANNELS = list(CHANNELS)


@pytest.mark.parametrize("label", SPELLINGS)
@pytest.mark.parametrize("channel", LEAK_CHANNELS)
def test_a_secret_from_any_channel_in_any_spelling_is_in_no_output(scenario: dict[str, Any], channel: str, label: str) -> None:
    _, leak = spellings(SECRETS[channel])[label]
    assert _where(leak, scenario["outputs"]) == [], f"the {channel} secret, spelled {label}, was stored or printed"


@pytest.mark.parametrize("label", SPELLINGS)
@pytest.mark.parametrize("channel", CHANNELS)
def test_positive_control_a_marker_in_the_same_places_is_found(scenario: dict[str, Any], channel: str, label: str) -> None:
    _, seen = spellings(MARKERS[channel])[label]
    assert _where(seen, scenario["outputs"]), f"the scan cannot see the {channel} channel spelled {label}: a pass above would prove nothing"


@pytest.mark.parametrize("corpus", ["database files", "checkpoints, decoded", "table kasloop_threads", "table kasloop_events", "table kasloop_inbox", "json logs", "file .kasloop/report.html"])
def test_positive_control_each_output_is_really_scanned(scenario: dict[str, Any], corpus: str) -> None:
    outputs = scenario["outputs"]
    assert corpus in outputs and outputs[corpus], f"{corpus} is missing or empty: {sorted(outputs)}"
    expected = {"table kasloop_threads": "config", "table kasloop_inbox": "inbox"}.get(corpus, "goal")
    assert MARKERS[expected].encode() in outputs[corpus], f"the {expected} marker is not in {corpus}"
    assert b"[redacted:OPENAI_API_KEY]" in outputs[corpus] or corpus in ("table kasloop_threads", "table kasloop_inbox")


def test_the_placeholders_name_each_channels_secret(scenario: dict[str, Any]) -> None:
    everything = b"".join(scenario["outputs"].values())
    for channel in CHANNELS:
        assert f"[redacted:{ENV_NAMES[channel]}]".encode() in everything, channel
    history = scenario["printed"][3].json()
    goal = next(e for e in history if e["kind"] == "goal")["text"]
    assert goal.startswith("goal secret:\nclear: [redacted:OPENAI_API_KEY]") and MARKERS["goal"] in goal


def test_a_tell_message_is_redacted_in_the_inbox_row_once_read(scenario: dict[str, Any]) -> None:
    conn = sqlite3.connect(scenario["folder"] / ".kasloop" / "kasloop.db")
    try:
        rows = conn.execute("SELECT source, text, taken_at FROM kasloop_inbox ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [(source, taken is not None) for source, _, taken in rows] == [("cli", True), ("telegram", True)]
    for (_, text, _), channel in zip(rows, ("tell", "inbox"), strict=True):
        assert SECRETS[channel] not in text and f"[redacted:{ENV_NAMES[channel]}]" in text and MARKERS[channel] in text


# --------------------------------------------------------------------------- the tables and logs, each


async def test_an_inbox_row_is_redacted_before_anything_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver in a process that built no agent: the default variables' secrets are known anyway."""
    token = _token("123456789:AA")
    monkeypatch.setenv("KASLOOP_TELEGRAM_TOKEN", token)
    async with open_database(tmp_path / "kasloop.db") as db:
        await Inbox(db).put("t", "telegram", f"token {token} b64 {base64.b64encode(token.encode()).decode()} marker {MARKERS['inbox']}")
        unread = await Inbox(db).pending("t")
    [row] = unread
    assert token not in row.text and base64.b64encode(token.encode()).decode()[:16] not in row.text
    assert row.text.count("[redacted:KASLOOP_TELEGRAM_TOKEN]") == 2 and MARKERS["inbox"] in row.text


def test_json_log_lines_are_redacted_whatever_the_logger_and_field() -> None:
    secret = _token("log-")
    protect_logs(Redactor({"LOG_SECRET": secret}))
    record = logging.LogRecord("some.library", logging.WARNING, __file__, 1, "failed with %s", (secret[:15],), None)
    record.__dict__.update({"data": {"nested": [Path(f"/tmp/{secret}")], "hex": secret.encode().hex()}, "marker": MARKERS["goal"]})
    try:
        raise RuntimeError(f"boom {base64.b64encode(secret.encode()).decode()}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert secret[:PREFIX_CHARS] not in line and secret.encode().hex()[:24] not in line
    assert base64.b64encode(secret.encode()).decode()[:16] not in line
    assert line.count("[redacted:LOG_SECRET]") == 4 and MARKERS["goal"] in line and json.loads(line)["level"] == "WARNING"


def test_the_report_of_an_old_database_is_redacted() -> None:
    """A database written before redaction covered every input still gives a clean report."""
    secret = _token("old-")
    row = {"thread": "t", "status": "done", "goal": f"use {secret}", "usage": {}, "approvals": [], "output": secret.encode().hex()}
    events = [{"id": 1, "ts": 0.0, "step": 0, "kind": "goal", "text": f"use {secret[:14]} and {MARKERS['goal']}"}]
    html = render_report(row, events, redactor=Redactor({"OLD": secret}))
    assert secret[:PREFIX_CHARS] not in html and secret.encode().hex()[:24] not in html
    assert "[redacted:OLD]" in html and MARKERS["goal"] in html
    assert secret in render_report(row, events), "positive control: without the redactor the report would show it"


# --------------------------------------------------------------------------- the Redactor


KEY = "sk-proj-Zq8/Xw+7Lm:Pt4_Hv9-Nc2Rb6Jd1Kf5Gy3"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor({"KEY": KEY, "PIN": "hunter2"})


@pytest.mark.parametrize("label", list(spellings(KEY)))
@pytest.mark.parametrize("around", [("", ""), ("see: ", " (end)"), ('{"v": "', '"}')])
def test_every_spelling_is_redacted_wherever_it_sits(redactor: Redactor, label: str, around: tuple[str, str]) -> None:
    text, leak = spellings(KEY)[label]
    out = redactor.text(around[0] + text + around[1])
    assert leak not in out and "[redacted:KEY]" in out
    assert out.startswith(around[0]) and out.endswith(around[1]), "the text around it is kept"


@pytest.mark.parametrize("cut", range(MIN_SECRET_CHARS, len(KEY) + 1))
def test_a_prefix_is_redacted_from_12_characters_on(redactor: Redactor, cut: int) -> None:
    out = redactor.text(f"key={KEY[:cut]};")
    if cut >= PREFIX_CHARS:
        assert out == "key=[redacted:KEY];"
    else:
        assert out == f"key={KEY[:cut]};", "a shorter prefix is ordinary text"


def test_a_short_secret_is_redacted_only_whole(redactor: Redactor) -> None:
    assert redactor.text("pw hunter2, hunter, hunte") == "pw [redacted:PIN], hunter, hunte"
    assert redactor.text(base64.b64encode(b"xhunter2\n").decode() + " " + b"hunter2".hex()) == "eG[redacted:PIN]K [redacted:PIN]"
    assert Redactor({"A": "abc"}).text("abc") == "abc", f"values under {MIN_SECRET_CHARS} characters are not secrets"


@pytest.mark.parametrize("encoder", ["base64", "hex"])
@pytest.mark.parametrize("lead", range(0, 40, 3))
def test_line_wrapped_base64_and_hex_are_redacted_across_the_breaks(redactor: Redactor, encoder: str, lead: int) -> None:
    """``base64`` wraps at 76 columns and ``xxd -p`` at 60: a break may fall anywhere in the secret."""
    data = b"A" * (lead + 57) + b"OPENAI_API_KEY=" + KEY.encode() + b"\nMORE=1\n"
    if encoder == "base64":
        wrapped, flat = base64.encodebytes(data).decode(), base64.b64encode(data).decode()
        pieces = [_core(shift, KEY.encode(), False) for shift in range(3)]
    else:
        flat = data.hex()
        wrapped = "\n".join(flat[i : i + 60] for i in range(0, len(flat), 60))
        pieces = [KEY.encode().hex()]
    out = redactor.text(wrapped)
    assert "[redacted:KEY]" in out
    joined = out.replace("\n", "")
    for piece in pieces:
        for i in range(0, len(piece) - 12):
            assert piece[i : i + 12] not in joined, f"12 characters of the encoded secret survived: {out}"
    assert redactor.text(base64.encodebytes(b"A" * lead + b"nothing secret here " * 5).decode()).count("[redacted") == 0


def test_percent_escapes_in_either_case_and_plus_for_space() -> None:
    redactor = Redactor({"PW": "p@ss word/with:all=chars"})
    upper = quote("p@ss word/with:all=chars", safe="")
    for text in (upper, upper.replace("%2F", "%2f").replace("%3A", "%3a").replace("%40", "%40").replace("%3D", "%3d"),
                 quote("p@ss word/with:all=chars"), "p%40ss+word%2Fwith%3Aall%3Dchars"):
        assert redactor.text(f"url?pw={text}&x=1") == "url?pw=[redacted:PW]&x=1", text


def test_a_secret_that_contains_another_is_replaced_whole_and_the_longest_match_wins() -> None:
    redactor = Redactor({"INNER": "abcdef123", "OUTER": "xx-abcdef123-yy-long-enough"})
    assert redactor.text("a xx-abcdef123-yy-long-enough b abcdef123 c") == "a [redacted:OUTER] b [redacted:INNER] c"
    assert redactor.text("xx-abcdef123-yy") == "[redacted:OUTER]", "a 12+ prefix of the outer one"


def test_non_ascii_secrets_in_every_encoding() -> None:
    secret = "pässwörd-über-ünïcode-ŝecret"
    redactor = Redactor({"U": secret})
    for text in (secret, secret.encode().hex(), base64.b64encode(b"ab" + secret.encode()).decode(), quote(secret, safe="")):
        assert "[redacted:U]" in redactor.text(text) and secret[:PREFIX_CHARS] not in redactor.text(text), text


def test_ordinary_text_is_unchanged_and_redaction_is_idempotent(redactor: Redactor) -> None:
    ordinary = "The agent read 12 files, wrote notes.md and said: " + base64.b64encode(os.urandom(300)).decode() + " " + os.urandom(64).hex()
    assert redactor.text(ordinary) == ordinary
    once = redactor.text(f"{KEY} {spellings(KEY)['hex'][0]} {ordinary}")
    assert redactor.text(once) == once and once.count("[redacted:KEY]") == 2


def test_values_are_stripped_and_never_shown(redactor: Redactor) -> None:
    stripped = Redactor({"FILE_TOKEN": f"  {KEY}\n"})
    assert stripped.text(f"k={KEY}") == "k=[redacted:FILE_TOKEN]"
    assert KEY not in repr(stripped) and stripped.names == ["FILE_TOKEN"]
    assert redactor.deep({KEY: [KEY[:13], ("hunter2", 3)], "n": None}) == {"[redacted:KEY]": ["[redacted:KEY]", ("[redacted:PIN]", 3)], "n": None}


def test_merged_and_process_wide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = _token("one-"), _token("two-")
    both = Redactor({"ONE": one}).merged(Redactor({"TWO": two}))
    assert both.text(f"{one} {two}") == "[redacted:ONE] [redacted:TWO]" and both.names == ["ONE", "TWO"]
    env = _token("env-")
    assert known_secrets().text(env) == env, "positive control: not known before it is set"
    monkeypatch.setenv("KASLOOP_SMTP_PASSWORD", env)
    assert known_secrets().text(env) == "[redacted:KASLOOP_SMTP_PASSWORD]", "a default variable is known as soon as it is set"
    later = _token("later-")
    protect_logs(Redactor({"LATER": later}))
    assert known_secrets().text(later[:PREFIX_CHARS]) == "[redacted:LATER]", "an agent's secrets are known to every store once its graph is built"


def test_an_unconfigured_redactor_changes_nothing() -> None:
    empty = Redactor({})
    assert not empty and empty.text(KEY) == KEY and empty.deep({"a": [KEY]}) == {"a": [KEY]} and not empty.finds(KEY)
    assert Redactor({"KEY": KEY}).finds(f"x {KEY[:PREFIX_CHARS]} y")
