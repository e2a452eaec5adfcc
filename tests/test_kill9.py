"""Issue 4, crash safety: SIGKILL a real agent process at >= 50 moments and prove nothing is lost or doubled.

A driver process (``kill9_agent.py``) runs one thread through a scripted plan
that mixes a non-idempotent append (``k9_append``), idempotent writes
(``files_write``) and mail to a real aiosmtpd on 127.0.0.1 (``email_send``).
This test kills it with SIGKILL again and again and starts it again each
time, until the goal is done. The moments:

* ``time``: a random delay after the driver's imports (start-up, database
  open, resume, checkpoint writes, pruning: wherever it happens to be);
* ``wal``: the k-th time the WAL file changes (a database write in progress);
* ``hs_before`` / ``hs_after``: inside ``k9_append``, before or after its
  effect (the tool blocks on a handshake, so the kill is exact);
* ``after_go``: a few milliseconds after a handshake is released (the ledger's
  result row, the event row, the next checkpoint);
* ``smtp_rcpt`` / ``smtp_data``: inside ``email_send``, from the mail
  server's own handler: before the message exists, or after the server
  accepted it and before the client heard so;
* ``checkpoint``: the driver kills itself as it is about to save its n-th
  checkpoint, after the node's own writes are saved (the window between a
  node and its checkpoint, which random timing only sometimes hits);
* ``fallback``: a planned moment that had not come after a few turns (no
  mail, no WAL change) becomes a kill at the next handshake.

The moments are paced so the kills run out before the plan does, and at
level 4 no more than three turns in a row can lose a call to
``outcome_unknown`` (a fourth failure in a row escalates: the goal would
stop, rightly, and the test could not see it complete).

After every kill: ``PRAGMA integrity_check`` is ok, no effect happened twice,
every approval seen is still there (pending, or decided as the test decided
it). At the end: status done; every append and every mail happened exactly
once, or its call is flagged ``outcome_unknown`` in the ledger and the event
log and happened at most once; the writes left the right content; no ledger
intent is left without a result.

The seed is printed (``KILL9_SEED=N`` reproduces the schedule; kills timed
by the clock land wherever the machine is at that moment).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).parent / "tools") not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent / "tools"))  # the mail server helper, shared with tests/tools
from aiosmtpd.smtp import Envelope, Session  # noqa: E402
from mailservers import HOST, SmtpRecorder, _Controller  # noqa: E402

from kasloop.nodes.self_diagnose import MAX_CONSECUTIVE_FAILURES  # noqa: E402
from kasloop.guardrails.policy import arg_hash  # noqa: E402

HERE = Path(__file__).parent
DRIVER = HERE / "kill9_agent.py"
THREAD = "k9"
APPEND_FILE = "appends.log"
PROCESS_DEADLINE = 60.0
"""Seconds one driver process may take before the test calls it hung."""
MAX_FAILING_TURNS_IN_A_ROW = MAX_CONSECUTIVE_FAILURES
"""At level 4 one more failed act in a row escalates: the kills never make more than this many
turns in a row possibly fail, so the goal can complete."""

KILL_KINDS = {"time": 24, "wal": 12, "checkpoint": 10, "hs_before": 12, "hs_after": 14, "after_go": 16, "smtp_rcpt": 8, "smtp_data": 10}
DECIDED = {"approve": "approved", "respond": "responded"}


def seed_value() -> int:
    raw = os.environ.get("KILL9_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 2**31)


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The scripted turns, and what each effect should look like at the end."""

    turns: list[list[dict[str, Any]]]
    mail_domain: str

    @staticmethod
    def make(n_turns: int, *, write_every: int, mail_turns: set[int], domain: str) -> Plan:
        turns = []
        for i in range(n_turns):
            # The append comes first in every turn: its handshake tells the test which turn is running.
            calls: list[dict[str, Any]] = [{"name": "k9_append", "args": {"token": f"A{i:02d}"}}]
            if i % write_every == 0:
                calls.append({"name": "files_write", "args": {"path": f"w{i % 4}.txt", "content": f"version {i}\n"}})
            if i in mail_turns:
                calls.append({"name": "email_send", "args": {"to": f"m{i:02d}@{domain}", "subject": f"kill9 M{i:02d}", "body": f"token M{i:02d}"}})
            turns.append(calls)
        return Plan(turns, domain)

    def script(self) -> str:
        lines = [{"content": f"step {i}", "tool_calls": calls} for i, calls in enumerate(self.turns)]
        lines.append({"content": "all done"})
        return "".join(json.dumps(line) + "\n" for line in lines)

    def calls(self, tool: str) -> list[dict[str, Any]]:
        return [c for calls in self.turns for c in calls if c["name"] == tool]

    def final_writes(self) -> dict[str, str]:
        final: dict[str, str] = {}
        for call in self.calls("files_write"):
            final[call["args"]["path"]] = call["args"]["content"]
        return final


# --------------------------------------------------------------------------- the mail server


class KillingRecorder(SmtpRecorder):
    """The SMTP server's handler; a scenario can have it kill the sending process mid-conversation."""

    scenario: Scenario | None = None

    def _maybe_kill(self, stage: str, address: str) -> None:
        scenario = self.scenario
        if scenario is not None and address.startswith("m") and address.endswith("@" + scenario.plan.mail_domain):
            scenario.smtp_stage(stage, int(address[1:3]))

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        self._maybe_kill("smtp_rcpt", address)  # before the message exists
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)  # the message is accepted here
        for address in envelope.rcpt_tos:
            self._maybe_kill("smtp_data", address)  # ... and the client never hears "250"
        return reply


@pytest.fixture
def smtp() -> Any:
    recorder = KillingRecorder()
    controller = _Controller(recorder, hostname=HOST, port=0, server_hostname="mail.test")
    controller.start()
    yield recorder, controller
    recorder.scenario = None
    controller.stop()


# --------------------------------------------------------------------------- one scenario


@dataclass
class KillPlan:
    kind: str
    delay: float = 0.0
    """time: seconds after ``ready``; after_go: seconds after the released handshake."""
    nth: int = 1
    """hs_*/after_go: the n-th handshake of that kind; wal: the n-th WAL change; smtp_*: the n-th mail."""
    fallback_turn: int = 1 << 30
    """If the moment has not come by this turn's handshake (it may never: no mail, no WAL change), kill there."""


@dataclass
class Scenario:
    name: str
    autonomy: int
    plan: Plan
    kills_target: int
    root: Path
    smtp_port: int
    rng: random.Random
    seed: int
    kills: list[dict[str, Any]] = field(default_factory=list)
    processes: int = 0
    t_last: int = -1
    """The latest turn whose append handshake the test has seen (any process)."""
    maybe_failed: set[int] = field(default_factory=set)
    approvals_seen: dict[str, str] = field(default_factory=dict)
    """approval id → kind, every request the test has seen."""
    given: dict[str, str] = field(default_factory=dict)
    """approval id → decision the test gave and saw recorded."""
    holds: dict[str, int] = field(default_factory=dict)
    """approval id → processes still to run (and maybe kill) while it stays pending."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: subprocess.Popen[bytes] | None = None
    current: KillPlan | None = None
    killed_by: str | None = None
    mails_this_process: Counter[str] = field(default_factory=Counter)
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.root / ".kasloop"
        self.workspace = self.root / "ws"
        self.workspace.mkdir(parents=True)
        script = self.root / "plan.jsonl"
        script.write_text(self.plan.script())
        self.setup = self.root / "setup.json"
        self.setup.write_text(json.dumps({
            "home": str(self.home), "workspace": str(self.workspace), "script": str(script), "autonomy": self.autonomy,
            "smtp_port": self.smtp_port, "goal": "carry out the plan",
        }))  # fmt: skip
        self.db = self.home / "kasloop.db"

    # -- reporting ---------------------------------------------------------------------------

    def where(self) -> str:
        """Appended to every failure: how to reproduce it."""
        tail = "; ".join(f"#{k['n']} {k['kind']}@{k['detail']}" for k in self.kills[-8:])
        return f"[{self.name}, KILL9_SEED={self.seed}, kills={len(self.kills)}, processes={self.processes}; last kills: {tail}]"

    # -- throttle (level 4 only) -------------------------------------------------------------

    def _turn_now(self, turn: int | None = None) -> int:
        return max(self.t_last, turn if turn is not None else -1)

    def may_kill(self, turn: int | None = None) -> bool:
        """Would a kill now leave more than ``MAX_FAILING_TURNS_IN_A_ROW`` turns in a row that may have failed?

        A kill can fail the latest turn seen and the next one (whose append may be
        claimed in the ledger before its handshake line arrives).
        """
        if self.autonomy != 4:
            return True
        t = self._turn_now(turn)
        marked = self.maybe_failed | {t, t + 1}
        low, high = t, t + 1
        while low - 1 in marked:
            low -= 1
        while high + 1 in marked:
            high += 1
        return high - low + 1 <= MAX_FAILING_TURNS_IN_A_ROW

    def kill(self, detail: str, turn: int | None = None) -> bool:
        """SIGKILL the driver now (once) and wait until it is gone. Caller holds no lock."""
        with self.lock:
            proc = self.proc
            if proc is None or self.killed_by is not None or proc.poll() is not None:
                return False
            if not self.may_kill(turn):
                return False
            t = self._turn_now(turn)
            assert self.current is not None
            kind = "fallback" if detail.startswith("fallback") else self.current.kind
            self.killed_by = kind  # before the kill: the watcher may see EOF at once
            os.kill(proc.pid, signal.SIGKILL)
            self.maybe_failed |= {t, t + 1}
            self.kills.append({"n": len(self.kills) + 1, "kind": kind, "detail": detail, "turn": t, "process": self.processes})
        proc.wait(timeout=10)
        return True

    def smtp_stage(self, stage: str, turn: int) -> None:
        """Called from the mail server's thread during a conversation with the driver."""
        plan = self.current
        if plan is None or plan.kind != stage:
            return
        with self.lock:
            self.mails_this_process[stage] += 1
            count = self.mails_this_process[stage]
        if count >= plan.nth:
            self.kill(f"M{turn:02d}", turn)

    # -- choosing the next moment ------------------------------------------------------------

    def choose(self) -> KillPlan | None:
        """The next process's kill moment, paced so the kills run out before the plan does.

        Start-up and resume take ~45 ms after ``ready`` here; a turn ~8 ms. While
        the plan has more than two turns left per kill still to make, moments are
        spread over up to ``remaining / left`` turns; after that each kill may move
        the thread on by about one turn at most; in the last two turns only
        start-up moments are used, which always land.
        """
        if len(self.kills) >= self.kills_target:
            return None
        left = self.kills_target - len(self.kills)
        remaining = max(0, len(self.plan.turns) - (self.t_last + 1))
        if remaining <= 2:
            return KillPlan("time", delay=self.rng.uniform(0.0, 0.015))
        span = remaining // left if remaining > 2 * left else 1
        kinds = dict(KILL_KINDS)
        mail_turns = [i for i, calls in enumerate(self.plan.turns) if i > self.t_last and any(c["name"] == "email_send" for c in calls)]
        if not mail_turns or mail_turns[0] - self.t_last > span:
            kinds.pop("smtp_rcpt")
            kinds.pop("smtp_data")
        kind = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
        # Never past the plan's last turn: a moment that has not come by then must still land (measured:
        # KILL9_SEED=1842935779 planned its last kill at t34 with a fallback at t41 of 40 turns, and the run
        # ended one kill short).
        fallback = min(self.t_last + span + 2, len(self.plan.turns) - 1)
        if kind == "time":
            return KillPlan(kind, delay=self.rng.uniform(0.0, 0.015 + 0.01 * span), fallback_turn=fallback)
        if kind == "wal":
            return KillPlan(kind, nth=self.rng.randint(1, 3 * span), fallback_turn=fallback)
        if kind == "checkpoint":  # perceive, decide and act each end with one
            return KillPlan(kind, nth=self.rng.randint(1, 3 * span), fallback_turn=fallback)
        if kind == "after_go":
            return KillPlan(kind, delay=self.rng.uniform(0.0, 0.004), nth=self.rng.randint(1, span), fallback_turn=fallback)
        if kind.startswith("hs_"):
            return KillPlan(kind, nth=self.rng.randint(1, span), fallback_turn=fallback)
        return KillPlan(kind, nth=1, fallback_turn=fallback)

    # -- one process -------------------------------------------------------------------------

    def run_driver(self, *args: str, plan: KillPlan | None = None) -> dict[str, Any] | None:
        """Start the driver, kill it at the chosen moment; return its result if it ended on its own."""
        self.processes += 1
        plan = plan or self.choose()
        if plan is not None and plan.kind == "checkpoint":
            if args[0] == "go":
                args = ("go-and-die", str(plan.nth))  # the driver kills itself there: see kill9_agent.py
            else:
                plan = KillPlan("time", delay=self.rng.uniform(0.0, 0.06))
        stderr_path = self.root / f"stderr-{self.processes}.txt"
        lines: queue.Queue[bytes | None] = queue.Queue()
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(DRIVER), str(self.setup), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        with self.lock:
            self.proc, self.current, self.killed_by = proc, plan, None
            self.mails_this_process.clear()

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            result = self._watch(proc, plan, lines)
        finally:
            if proc.poll() is None and self.killed_by is None:
                proc.kill()  # a failed check or a hang: never leave our driver behind
            proc.wait(timeout=10)
            reader.join(timeout=10)
            with self.lock:
                self.proc, self.current = None, None
        assert proc.stdin is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if self.killed_by == "checkpoint":
            assert proc.returncode == -signal.SIGKILL, f"the driver should have killed itself, exit {proc.returncode} {self.where()}"
        if self.killed_by is None:
            err = stderr_path.read_text()[-3000:]
            assert proc.returncode == 0 and result is not None, f"driver `{' '.join(args)}` exited {proc.returncode}:\n{err}\n{self.where()}"
        return result

    def _watch(self, proc: subprocess.Popen[bytes], plan: KillPlan | None, lines: queue.Queue[bytes | None]) -> dict[str, Any] | None:
        deadline = time.monotonic() + PROCESS_DEADLINE
        ready_at: float | None = None
        wal = self.db.with_name(self.db.name + "-wal")
        wal_seen: tuple[int, int] | None = None
        wal_changes = 0
        handshakes: Counter[str] = Counter()
        kill_at: float | None = None
        result: dict[str, Any] | None = None
        assert proc.stdin is not None

        def release() -> None:
            try:
                proc.stdin.write(b"go\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass

        while True:
            now = time.monotonic()
            assert now < deadline, f"driver did not finish within {PROCESS_DEADLINE:g} s {self.where()}"
            if self.killed_by is not None:
                return None
            if kill_at is not None and now >= kill_at:
                kill_at = None
                assert plan is not None
                if not self.kill(f"{plan.kind} {plan.delay * 1000:.1f}ms t{self.t_last}"):
                    kill_at = now + 0.003  # not allowed yet (level 4 throttle): a little later
            wait = 0.0005 if (plan is not None and plan.kind == "wal" and ready_at is not None) else 0.05
            if kill_at is not None:
                wait = min(wait, max(0.0, kill_at - now))
            try:
                raw = lines.get(timeout=wait)
            except queue.Empty:
                raw = b""
            if raw is None:  # EOF: the process ended (on its own or killed)
                proc.wait(timeout=10)
                return result
            line = raw.decode().strip()
            if plan is not None and plan.kind == "wal" and ready_at is not None:
                try:
                    st = wal.stat()
                    seen = (st.st_size, st.st_mtime_ns)
                except FileNotFoundError:
                    seen = (0, 0)
                if wal_seen is not None and seen != wal_seen:
                    wal_changes += 1
                    if wal_changes >= plan.nth:
                        if self.kill(f"wal change {wal_changes} t{self.t_last}"):
                            return None
                wal_seen = seen
            if not line:
                continue
            if line == "ready":
                ready_at = time.monotonic()
                if plan is not None and plan.kind == "time":
                    kill_at = ready_at + plan.delay
            elif line.startswith("hs "):
                _, stage, token = line.split()
                turn = int(token[1:])
                self.t_last = max(self.t_last, turn)
                handshakes[stage] += 1
                if plan is not None and plan.kind == f"hs_{stage}" and handshakes[stage] >= plan.nth:
                    if self.kill(f"{stage} {token}", turn):
                        return None
                if plan is not None and turn >= plan.fallback_turn and self.kill(f"fallback {stage} {token}", turn):
                    return None
                release()
                if plan is not None and plan.kind == "after_go" and sum(handshakes.values()) >= plan.nth:
                    kill_at = time.monotonic() + plan.delay
            elif line == "dying before checkpoint":
                with self.lock:
                    self.killed_by = "checkpoint"  # the driver's own SIGKILL, at the moment the test asked for
                    self.kills.append({"n": len(self.kills) + 1, "kind": "checkpoint", "detail": f"checkpoint {plan.nth if plan else '?'} t{self.t_last}",
                                       "turn": self.t_last, "process": self.processes})
            elif line.startswith("path "):
                self.paths.append(line.removeprefix("path "))
                # Starting the goal again is only right before the thread's first checkpoint.
                assert line == "path resume" or self.t_last < 0, f"driver took `{line}` after progress {self.where()}"
            elif line.startswith("result "):
                result = json.loads(line.removeprefix("result "))

    # -- the database, as the test sees it -----------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read-only: closing a read-write connection would checkpoint the WAL a killed driver left behind,
        and the next driver must find (and recover) it as it is."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def check_after_process(self, mails: list[str]) -> None:
        """What must hold after every process, killed or not."""
        if not self.db.exists():
            return
        [[integrity]] = self.query("PRAGMA integrity_check")
        assert integrity == "ok", f"integrity_check: {integrity} {self.where()}"
        appended = self.appended()
        doubled = {t: n for t, n in appended.items() if n > 1}
        assert not doubled, f"appended twice: {doubled} {self.where()}"
        sent = Counter(mails)
        doubled = {t: n for t, n in sent.items() if n > 1}
        assert not doubled, f"mail sent twice: {doubled} {self.where()}"
        tables = {r["name"] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "kasloop_approvals" not in tables:  # killed while the first process was creating the schema
            assert not self.approvals_seen, f"the approvals table is gone {self.where()}"
            return
        rows = {r["approval_id"]: r for r in self.query("SELECT approval_id, kind, status FROM kasloop_approvals")}
        stale = [a for a, r in rows.items() if r["status"] == "stale"]
        assert not stale, f"approvals went stale without a decision: {stale} {self.where()}"
        for approval_id in self.approvals_seen:
            assert approval_id in rows, f"approval {approval_id} was lost {self.where()}"
            status = rows[approval_id]["status"]
            if approval_id in self.given:
                assert status == self.given[approval_id], f"approval {approval_id}: decided {self.given[approval_id]}, now {status} {self.where()}"
            else:
                assert status == "pending", f"approval {approval_id} is {status} though nobody decided it {self.where()}"
        for approval_id, row in rows.items():
            self.approvals_seen.setdefault(approval_id, row["kind"])

    def appended(self) -> Counter[str]:
        path = self.workspace / APPEND_FILE
        text = path.read_text() if path.exists() else ""
        return Counter(line.split()[0] for line in text.splitlines() if line.strip())

    def pending_approvals(self) -> list[sqlite3.Row]:
        if not self.db.exists() or not self.query("SELECT 1 FROM sqlite_master WHERE name = 'kasloop_approvals'"):
            return []
        return self.query("SELECT approval_id, kind, tool, args FROM kasloop_approvals WHERE status = 'pending' ORDER BY created_at, rowid")

    # -- the whole scenario --------------------------------------------------------------------

    def drive(self, recorder: KillingRecorder) -> dict[str, Any]:
        """Start, kill, resume and decide until the thread is done."""
        recorder.scenario = self
        done: dict[str, Any] | None = None
        for _ in range(400):
            action = self.next_action()
            result = self.run_driver(*action)
            if action[0] in DECIDED:
                self.note_decision(action[0], action[1])
            self.check_after_process(mail_tokens(recorder, self.plan.mail_domain))
            if result is not None and result["status"] == "done":
                done = result
                break
            if result is not None:
                assert result["status"] == "waiting_approval", f"thread stopped with {result} {self.where()}"
                listed = {a["approval_id"] for a in result["approvals"]}
                pending = {r["approval_id"] for r in self.pending_approvals()}
                assert listed == pending and listed, f"listed {listed}, pending in the database {pending} {self.where()}"
        assert done is not None, f"the thread never finished {self.where()}"
        recorder.scenario = None
        return done

    def next_action(self) -> tuple[str, ...]:
        """``go``, or a decision for the oldest pending approval (after holding it over a process or two).

        While a request is held the thread is only asked to continue, and may be
        killed meanwhile: the request must survive that. The mail's request is
        always held twice; others now and then.
        """
        pending = self.pending_approvals()
        if not pending:
            return ("go",)
        row = pending[0]
        approval_id = row["approval_id"]
        self.approvals_seen.setdefault(approval_id, row["kind"])
        if approval_id not in self.holds:
            self.holds[approval_id] = 2 if row["tool"] == "email_send" and row["kind"] == "tool_call" else int(self.rng.random() < 0.25)
        if self.holds[approval_id] > 0:
            self.holds[approval_id] -= 1
            return ("go",)
        if row["kind"] == "tool_call":
            return ("approve", approval_id)
        # Outcome unknown: tell the model to move on; approving would run the call a second time.
        return ("respond", approval_id, "Do not repeat it; carry on with the next step.")

    def note_decision(self, decision: str, approval_id: str) -> None:
        [row] = self.query("SELECT status FROM kasloop_approvals WHERE approval_id = ?", (approval_id,))
        if row["status"] != "pending":
            assert row["status"] == DECIDED[decision], f"gave {decision} to {approval_id}, recorded {row['status']} {self.where()}"
            self.given[approval_id] = row["status"]


def mail_tokens(recorder: SmtpRecorder, domain: str) -> list[str]:
    """One token per message the server accepted for this scenario (from its recipient ``mNN@domain``)."""
    out = []
    for envelope in list(recorder.envelopes):
        for rcpt in envelope.rcpt_tos:
            if rcpt.endswith("@" + domain):
                out.append("M" + rcpt[1:3])
    return out


# --------------------------------------------------------------------------- final checks


def check_final(s: Scenario, result: dict[str, Any], recorder: SmtpRecorder) -> dict[str, Any]:
    decided = [json.loads(r["data"]).get("turn", -1) for r in s.query("SELECT data FROM kasloop_events WHERE thread_id = ? AND kind = 'decide'", (THREAD,))]
    last = max(decided, default=-1)
    assert result["status"] == "done" and result["output"] == "all done", (
        f"the thread ended `{result['status']}` with output {result['output']!r}, but the model played {last + 1} of the "
        f"script's {len(s.plan.turns) + 1} turns: a resume took an unfinished thread for a finished one {s.where()}"
    )
    assert len(s.kills) >= s.kills_target, f"only {len(s.kills)} kills {s.where()}"
    [[integrity]] = s.query("PRAGMA integrity_check")
    assert integrity == "ok", s.where()

    ledger = s.query("SELECT key, call_id, tool, arg_hash, result FROM kasloop_ledger WHERE thread_id = ?", (THREAD,))
    open_intents = [r["tool"] for r in ledger if r["result"] is None]
    assert not open_intents, f"intents without a result after the goal completed: {open_intents} {s.where()}"
    unknown = {r["arg_hash"] for r in ledger if json.loads(r["result"])["error_kind"] == "outcome_unknown"}
    events = [json.loads(r["data"]) for r in s.query("SELECT data FROM kasloop_events WHERE thread_id = ? AND kind = 'tool'", (THREAD,))]
    flagged_in_log = {e["arg_hash"] for e in events if e.get("error_kind") == "outcome_unknown"}
    assert unknown == flagged_in_log, f"ledger and event log disagree on outcome_unknown: {unknown ^ flagged_in_log} {s.where()}"
    assert all(json.loads(r["result"])["ok"] or r["arg_hash"] in unknown for r in ledger), f"a call failed for another reason {s.where()}"

    appended = s.appended()
    sent = Counter(mail_tokens(recorder, s.plan.mail_domain))
    figures: dict[str, Any] = {
        "kills": len(s.kills), "processes": s.processes, "unknown": len(unknown), "by_kind": Counter(k["kind"] for k in s.kills),
        "started again (no checkpoint yet)": sum(p != "resume" for p in s.paths) - 1,
    }  # fmt: skip
    for tool, seen, token_of in (
        ("k9_append", appended, lambda c: c["args"]["token"]),
        ("email_send", sent, lambda c: "M" + c["args"]["to"][1:3]),
    ):
        for call in s.plan.calls(tool):
            token, flagged = token_of(call), arg_hash(tool, call["args"]) in unknown
            count = seen.get(token, 0)
            if flagged:
                assert count <= 1, f"{token}: flagged outcome_unknown and happened {count} times {s.where()}"
                figures[f"{tool} unknown (happened {count})"] = figures.get(f"{tool} unknown (happened {count})", 0) + 1
            else:
                assert count == 1, f"{token}: not flagged, happened {count} times {s.where()}"
    assert set(appended) <= {c["args"]["token"] for c in s.plan.calls("k9_append")}, s.where()
    for path, content in s.plan.final_writes().items():
        assert (s.workspace / path).read_text() == content, f"{path} holds the wrong version {s.where()}"

    approvals = s.query("SELECT approval_id, kind, status FROM kasloop_approvals WHERE thread_id = ?", (THREAD,))
    assert all(r["status"] in DECIDED.values() for r in approvals), f"{[dict(r) for r in approvals]} {s.where()}"
    assert {r["approval_id"]: r["status"] for r in approvals} == s.given, s.where()
    decisions = s.query("SELECT data FROM kasloop_events WHERE thread_id = ? AND kind = 'approval_decision'", (THREAD,))
    logged = {json.loads(r["data"])["approval_id"] for r in decisions}
    assert logged == set(s.given), f"decisions without an audit row: {set(s.given) - logged} {s.where()}"
    figures["approvals"] = Counter(r["kind"] for r in approvals)
    return figures


# --------------------------------------------------------------------------- the tests


def scenario(tmp_path: Path, smtp: Any, name: str, autonomy: int, plan: Plan, kills: int) -> tuple[Scenario, KillingRecorder]:
    recorder, controller = smtp
    seed = seed_value()
    print(f"{name}: KILL9_SEED={seed}")
    return Scenario(name, autonomy, plan, kills, tmp_path / name, int(controller.port), random.Random(seed), seed), recorder


def test_kill9_level4_append_write_mail(tmp_path: Path, smtp: Any) -> None:
    """40 turns, 58 calls, >= 38 kills: the autonomous agent finishes with every effect once or flagged."""
    plan = Plan.make(40, write_every=4, mail_turns={i for i in range(40) if i % 5 == 1}, domain="l4.example.org")
    s, recorder = scenario(tmp_path, smtp, "level4", 4, plan, kills=38)
    started = time.monotonic()
    figures = check_final(s, s.drive(recorder), recorder)
    print(f"level4: {figures} in {time.monotonic() - started:.1f} s")


def test_kill9_level3_approvals_survive(tmp_path: Path, smtp: Any) -> None:
    """Level 3: a mail needs approval; outcome-unknown appends escalate to the test; no request is lost."""
    plan = Plan.make(16, write_every=3, mail_turns={11}, domain="l3.example.org")
    s, recorder = scenario(tmp_path, smtp, "level3", 3, plan, kills=14)
    started = time.monotonic()
    figures = check_final(s, s.drive(recorder), recorder)
    print(f"level3: {figures} in {time.monotonic() - started:.1f} s")
    mail = s.query("SELECT approval_id, status FROM kasloop_approvals WHERE kind = 'tool_call' AND tool = 'email_send'")
    assert [r["status"] for r in mail] == ["approved"], f"the mail's approval: {[dict(r) for r in mail]} {s.where()}"


@pytest.mark.parametrize("checkpoint", [2, 3, 4, 5])
def test_kill9_between_a_node_and_its_checkpoint(tmp_path: Path, smtp: Any, checkpoint: int) -> None:
    """The exact moment random kills only sometimes hit: a node's writes are saved, the checkpoint after it is not.

    Checkpoint 1 is the input; 2, 3 and 4 follow the first perceive, decide
    and act, 5 the second perceive. The resumed thread must carry on to the end.
    """
    plan = Plan.make(3, write_every=2, mail_turns={1}, domain="exact.example.org")
    s, recorder = scenario(tmp_path, smtp, f"checkpoint{checkpoint}", 4, plan, kills=1)
    recorder.scenario = s
    assert s.run_driver("go", plan=KillPlan("checkpoint", nth=checkpoint)) is None
    assert [k["kind"] for k in s.kills] == ["checkpoint"], s.where()
    s.check_after_process(mail_tokens(recorder, plan.mail_domain))
    result = s.run_driver("go")
    assert result is not None
    figures = check_final(s, result, recorder)
    assert figures["unknown"] == 0, f"no tool was interrupted, yet: {figures} {s.where()}"
