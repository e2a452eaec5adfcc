"""Real mail servers on 127.0.0.1 for the email family's tests.

* SMTP: ``aiosmtpd`` in a thread (its ``Controller``), with a handler that
  records every EHLO and every accepted envelope, optionally behind STARTTLS or
  implicit TLS and with AUTH checked against one user.
* IMAP: Dovecot (Debian package ``dovecot-imapd``) as a foreground process with
  a config written here: 127.0.0.1 on free ports (plain/STARTTLS and IMAPS), a
  passwd-file with users added per test, maildirs under the test's folder,
  a self-signed certificate. It runs as root (this sandbox's CI runs as root);
  mail is owned by the ``dovecot`` system user and reached through a mail
  chroot, so the 0700 pytest folders need no permission changes.

Certificates are made with the ``openssl`` command line tool.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
USERS = 40  # IMAP test users made before Dovecot starts (one per test that needs a mailbox)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_cert(folder: Path) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.fail("the `openssl` command is needed to make test certificates: apt-get install -y openssl")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return Cert(cert, key)


# --------------------------------------------------------------------------- SMTP


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: records greetings, logins and accepted messages (before answering 250)."""

    ehlos: list[str] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    """Recipients answered with 550 (the server's own policy)."""
    received: threading.Event = field(default_factory=threading.Event)
    stall: str = ""
    """``RCPT`` or ``DATA``: hold that reply until ``release`` is set (a slow server)."""
    release: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    """Set when a client connection ends."""

    async def _maybe_stall(self, stage: str) -> None:
        if self.stall == stage:
            await asyncio.to_thread(self.release.wait, 30)

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:
        self.ehlos.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        await self._maybe_stall("RCPT")
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        await self._maybe_stall("DATA")
        self.envelopes.append(envelope)
        self.received.set()
        return "250 2.0.0 queued as KAS123"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for env in self.envelopes:
            data = env.original_content if env.original_content is not None else env.content
            assert isinstance(data, bytes)
            parsed.append(BytesParser(policy=email_policy.default).parsebytes(data))
        return parsed  # type: ignore[return-value]


class _Controller(Controller):
    """Listens on a free port chosen by the OS (port=0), and says which."""

    def factory(self) -> SMTP:
        """Each connection's protocol, reporting the end of the connection to the recorder."""
        smtp = super().factory()
        lost = smtp.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self.handler.closed.set()
            lost(exc)

        smtp.connection_lost = connection_lost  # type: ignore[method-assign]
        return smtp

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpServer:
    recorder: SmtpRecorder
    controller: _Controller
    security: str

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {"host": HOST, "port": self.port, "security": self.security, "timeout": 10, **overrides}


def start_smtp(*, security: str = "plain", cert: Cert | None = None, login: tuple[str, str] | None = None) -> SmtpServer:
    """An aiosmtpd server: ``plain``, ``starttls`` (offered and required) or ``ssl`` (implicit TLS)."""
    recorder = SmtpRecorder()
    kwargs: dict[str, Any] = {"hostname": HOST, "port": 0, "server_hostname": "mail.test"}
    if security == "starttls":
        assert cert is not None
        kwargs.update(tls_context=cert.server_context(), require_starttls=True)
    elif security == "ssl":
        assert cert is not None
        kwargs.update(ssl_context=cert.server_context())
    if login is not None:
        user, password = login

        def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
            recorder.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=security != "plain")
    controller = _Controller(recorder, **kwargs)
    controller.start()
    return SmtpServer(recorder=recorder, controller=controller, security=security)


# --------------------------------------------------------------------------- IMAP (Dovecot)


DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
instance_name = kasloop-test-{port}
log_path = /dev/stderr
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = root
default_internal_group = root
default_login_user = dovenull
first_valid_uid = 0
valid_chroot_dirs = {base}/mail
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/./%u
}}
# no anvil auth penalty (a growing delay for every login from an address after a failed one): the
# wrong-password tests must not slow down the tests after them
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
"""


@dataclass
class Mailbox:
    """One IMAP user of the running Dovecot, with a fresh empty INBOX."""

    server: Dovecot
    user: str
    password: str

    def settings(self, security: str = "plain", **overrides: Any) -> dict[str, Any]:
        port = self.server.ssl_port if security == "ssl" else self.server.port
        base = {"host": HOST, "port": port, "security": security, "username": self.user, "password_env": "KASLOOP_TEST_IMAP_PASSWORD", "timeout": 10}
        if security != "plain":
            base["ca_file"] = str(self.server.cert.cert)
        return {**base, **overrides}

    def client(self) -> imaplib.IMAP4:
        """A separate, independent IMAP connection (to check what the tools did)."""
        conn = imaplib.IMAP4(HOST, self.server.port, timeout=10)
        conn.login(self.user, self.password)
        return conn

    def append(self, raw: bytes, *, folder: str = "INBOX", flags: str = "") -> int:
        """Store a message; returns its UID."""
        conn = self.client()
        try:
            typ, data = conn.append(folder, f"({flags})" if flags else None, None, raw)
            assert typ == "OK", data
            text = data[0].decode()
            return int(text.split("APPENDUID ", 1)[1].split()[1].rstrip("]"))
        finally:
            conn.logout()

    def create(self, folder: str) -> None:
        conn = self.client()
        try:
            typ, data = conn.create(folder)
            assert typ == "OK", data
        finally:
            conn.logout()

    def flags(self, uid: int, folder: str = "INBOX") -> set[str]:
        conn = self.client()
        try:
            typ, _ = conn.select(folder, readonly=True)
            assert typ == "OK"
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            assert typ == "OK" and data and data[0], data
            text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
            return set(text.split("FLAGS (", 1)[1].split(")", 1)[0].split()) - {"\\Recent"}  # \\Recent is session state
        finally:
            conn.logout()

    def count(self, folder: str = "INBOX") -> int:
        conn = self.client()
        try:
            typ, data = conn.select(folder, readonly=True)
            assert typ == "OK", data
            return int(data[0])
        finally:
            conn.logout()


@dataclass
class Dovecot:
    """A running Dovecot: ``port`` speaks plain IMAP and STARTTLS, ``ssl_port`` implicit TLS."""

    base: Path
    port: int
    ssl_port: int
    cert: Cert
    process: subprocess.Popen[bytes]
    log: list[str]
    owner: tuple[int, int]
    users: Iterator[tuple[str, str]]
    reader: threading.Thread | None = None

    def new_mailbox(self) -> Mailbox:
        """The next unused user of the pool, with an empty mailbox.

        Dovecot re-reads a passwd-file at most once a second, so users added
        while it runs may not be seen yet: the pool is written before it starts.
        """
        user, password = next(self.users, ("", ""))
        if not user:
            pytest.fail(f"the Dovecot fixture ran out of test users; raise USERS in {__file__}")
        return Mailbox(server=self, user=user, password=password)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)  # EOF once every Dovecot process has exited
        if self.process.stderr is not None:
            self.process.stderr.close()


def _dovecot_binary() -> str:
    found = shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("Dovecot is not installed; the IMAP tests need it: apt-get install -y dovecot-imapd (Debian/Ubuntu)")
    return found


def start_dovecot(base: Path) -> Dovecot:
    """Write a config under ``base``, start ``dovecot -F`` and return once it logs that it is up."""
    binary = _dovecot_binary()
    if os.geteuid() != 0:
        pytest.fail("the Dovecot test server is configured to start as root (it drops to the `dovecot` user for mail); run the tests as root")
    try:
        owner = pwd.getpwnam("dovecot")
    except KeyError:
        pytest.fail("the `dovecot` system user is missing; reinstall the dovecot-core package (apt-get install -y dovecot-imapd)")
    cert = make_cert(base / "tls")
    for name in ("run", "state", "mail"):
        (base / name).mkdir(parents=True)
    pool = [(f"user{n}", f"imap-pass-{n:04d}") for n in range(1, USERS + 1)]
    for user, _ in pool:
        home = base / "mail" / user
        home.mkdir()
        os.chown(home, owner.pw_uid, owner.pw_gid)
    (base / "passwd").write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in pool))
    port, ssl_port = free_port(), free_port()
    conf = base / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(base=base, port=port, ssl_port=ssl_port, cert=cert.cert, key=cert.key, uid=owner.pw_uid, gid=owner.pw_gid))
    process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log: list[str] = []
    ready = threading.Event()

    def read_log() -> None:  # also keeps the pipe drained for Dovecot's whole life
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            if "starting up" in line:
                ready.set()
        ready.set()  # EOF: Dovecot exited

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    server = Dovecot(
        base=base, port=port, ssl_port=ssl_port, cert=cert, process=process, log=log,
        owner=(owner.pw_uid, owner.pw_gid), users=iter(pool), reader=reader,
    )  # fmt: skip
    if not ready.wait(STARTUP_TIMEOUT) or process.poll() is not None:
        server.stop()
        pytest.fail("Dovecot did not start:\n" + "\n".join(log))
    # Listeners are bound before the "starting up" line; prove it with one real connection.
    with socket.create_connection((HOST, port), timeout=5) as sock:
        greeting = sock.recv(200)
    assert greeting.startswith(b"* OK"), greeting
    return server
