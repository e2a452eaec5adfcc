"""The log relay of one background process (``process_start``): a standalone script, standard library only.

kasloop runs this file by path, ``python -I -S <this file> <process id>``, in a new session: ``-I``
keeps the environment, the user's site folder and this file's own folder (which holds modules named
``email`` and ``http``) off ``sys.path``, ``-S`` skips ``site`` (no site-packages), so nothing of
kasloop or of the workspace is imported. ``ps`` shows this file and the process id.

Protocol: stdin carries one JSON object ``{argv, executable, cwd, env, log, state, limit, lifetime,
kill_grace, sandboxed}``; stdout answers one JSON line, ``{"pid": N, "start_ticks": T}`` or
``{"error": text, "errno": N}``, and is then closed. The relay

* starts the program in its own process group, stdin closed, stdout + stderr on one pipe;
* copies the output to ``log``, rotating to ``log + ".1"`` at half of ``limit`` bytes (older output is
  dropped and counted);
* past ``lifetime`` seconds (if set) sends the group SIGTERM, then SIGKILL after ``kill_grace``;
* once the program has ended *and* the pipe holds nothing more from it, writes the exit status to
  ``state`` (JSON, replaced atomically), so "exited" means the whole output is in the log.

It outlives signals sent to its whole session (SIGTERM, SIGINT, SIGHUP are caught) so that the exit
status still gets recorded. See :mod:`kasloop.tools.process` for the rest of the family.
"""

# No ``typing`` and no ``__future__``: every import costs memory in a process that lives as long as its program.
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

__all__ = ["main", "relay", "ticks"]


# By hand, not psutil: this script must stay stdlib-only (``-S``: no site-packages) and answer the raw ticks kasloop stores.
def ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None if ``pid`` is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            data = fh.read()
        return int(data[data.rfind(b")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def reply(obj: dict) -> None:
    """Answer kasloop once on stdout, then point stdout at /dev/null (kasloop stops reading)."""
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def relay(cfg: dict) -> None:
    """Start the program of ``cfg``, relay its output into the log and record how it ended."""
    # Outlive signals sent to the whole session, so the exit status still gets recorded.
    # Caught (not ignored) signals are reset to the default in the program at exec.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    log, state_path, segment = cfg["log"], cfg["state"], max(cfg["limit"] // 2, 1)
    lock = threading.Lock()
    state: dict = {
        "relay_pid": os.getpid(), "relay_ticks": ticks(os.getpid()), "pid": None, "total": 0, "dropped": 0,
        "returncode": None, "ended_at": None,
    }  # fmt: skip

    def save(**changes: object) -> None:
        with lock:
            state.update(changes)
            tmp = state_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(state, fh)
            os.replace(tmp, state_path)

    out = open(log, "ab", buffering=0)  # exists once the PID is known
    read_fd, write_fd = os.pipe()
    try:
        child = subprocess.Popen(
            cfg["argv"], executable=cfg["executable"], cwd=cfg["cwd"], env=cfg["env"],
            stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd, process_group=0,
        )  # fmt: skip
    except OSError as exc:
        reply({"error": exc.strerror or str(exc), "errno": exc.errno or 0})
        return
    os.close(write_fd)
    save(pid=child.pid)
    reply({"pid": child.pid, "start_ticks": ticks(child.pid)})

    # The waiter only wakes the reader: the exit is recorded once the pipe holds nothing more
    # from the program, so "exited" always means its whole output is in the log.
    wake_r, wake_w = os.pipe()
    ended: list[tuple[int, float]] = []

    def wait() -> None:
        code = child.wait()
        if cfg.get("sandboxed") and 128 < code <= 192:
            code = 128 - code  # bubblewrap exits 128+N when the program died of signal N: report it as a signal
        ended.append((code, time.time()))
        os.write(wake_w, b"x")

    waiter = threading.Thread(target=wait)
    waiter.start()
    size, total, dropped, broken, watch = out.tell(), 0, 0, None, [read_fd, wake_r]
    # A lifetime (process.max_lifetime): past it the program's group gets SIGTERM, SIGKILL after the grace.
    deadline = time.monotonic() + cfg["lifetime"] if cfg.get("lifetime") else None
    kill_sig = signal.SIGTERM
    while True:
        wait_for = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = select.select(watch, [], [], wait_for)[0]
        if not ready:
            try:
                os.killpg(child.pid, kill_sig)
            except OSError:
                pass
            if kill_sig == signal.SIGTERM:
                save(lifetime_expired=True)
                kill_sig, deadline = signal.SIGKILL, time.monotonic() + cfg["kill_grace"]
            else:
                deadline = None
            continue
        if read_fd not in ready:
            code, when = ended[0]
            save(returncode=code, ended_at=when)
            watch = [read_fd]
            continue
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
        view = memoryview(chunk)
        while view and broken is None:
            try:
                if size >= segment:
                    out.close()
                    try:
                        dropped += os.path.getsize(log + ".1")
                    except OSError:
                        pass
                    os.replace(log, log + ".1")
                    out = open(log, "wb", buffering=0)
                    size = 0
                    save(total=total, dropped=dropped)
                written = out.write(view[: segment - size]) or 0
            except OSError as exc:  # disk full: keep draining so the program never blocks
                broken = exc.strerror or str(exc)
                save(log_error=broken)
                break
            size += written
            view = view[written:]
        if broken is not None:
            dropped += len(view)
    out.close()
    waiter.join()
    code, when = ended[0]
    save(returncode=code, ended_at=when, total=total, dropped=dropped, done=True)


def main() -> None:
    """Read the configuration from stdin and relay (``argv[1]``, the process id, is only for ``ps``)."""
    relay(json.loads(sys.stdin.buffer.read()))


if __name__ == "__main__":
    main()
