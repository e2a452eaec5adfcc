"""kasloop's exceptions, in one tree.

```
KasloopError                      root: every error kasloop raises on purpose
├── ConfigError                   bad config, flag or model spec (CLI exit 2)
│   └── AutonomyLevelError        autonomy outside 2..4
├── UsageError                    a valid config used wrongly (CLI exit 2)
│   ├── ApprovalError             an approval decision that cannot be applied (unknown id, malformed)
│   │   ├── ApprovalAlreadyDecided    someone decided it first
│   │   ├── ApprovalExpired           nobody decided before it expired
│   │   └── ApprovalStale             the thread moved on, or the decision was made for other arguments
│   ├── ThreadNotFound            no such thread in this home
│   └── ThreadBusy                another process is driving this thread
├── ModelError                    the model failed (HTTP error, bad reply)
│   └── ScriptExhausted           a scripted model ran out of turns (exit 1)
├── CheckpointError               the database could not be read or written
├── LocalModelError               the embedded model could not be installed or started
└── BudgetExceeded                a hard limit would be crossed (exit 11)
```

Every message says what happened, quotes the bad value in backticks and says
what to do next. Errors keep ``.message`` and pickle cleanly, so they survive
process boundaries.

Signals that steer a run (a call needs approval, a tool asks to be retried)
are not errors and do not live here.

Text is UTF-8 everywhere: :func:`check_text` turns a string that holds bytes
which were not UTF-8 (Python keeps them as lone surrogates, e.g. from the
command line) into a ``UsageError`` that shows them escaped.
"""

from __future__ import annotations

__all__ = [
    "ApprovalAlreadyDecided",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalStale",
    "AutonomyLevelError",
    "BudgetExceeded",
    "CheckpointError",
    "ConfigError",
    "KasloopError",
    "LocalModelError",
    "ModelError",
    "ScriptExhausted",
    "ThreadBusy",
    "ThreadNotFound",
    "UsageError",
]  # only the exceptions; the helpers below are imported by name


class KasloopError(Exception):
    """Root of kasloop's errors. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (self.__class__, (self.message,))

    def __str__(self) -> str:
        return self.message


class ConfigError(KasloopError):
    """The configuration, a flag or a model spec is invalid."""

    exit_code = 2


class AutonomyLevelError(ConfigError):
    """An autonomy level kasloop does not run (only 2, 3 and 4 exist)."""


class UsageError(KasloopError):
    """A valid setup used in a way that cannot work (e.g. an unknown approval id)."""

    exit_code = 2


class ApprovalError(UsageError):
    """An approval decision that cannot be applied: unknown, stale or malformed.

    Callers that must act differently on one reason catch its subclass, never match the message text.
    """


class ApprovalAlreadyDecided(ApprovalError):
    """The request was decided already (possibly by another channel a moment ago); nothing changed."""


class ApprovalExpired(ApprovalError):
    """Nobody decided before the request expired (``approval_ttl``); the refusal is logged as ``approval_refused``."""


class ApprovalStale(ApprovalError):
    """The request can no longer be decided as asked: its thread moved on (or is gone), or the
    decision is bound to an ``arg_hash`` that is not the request's."""


class ThreadNotFound(UsageError):
    """The thread id does not exist in this kasloop home."""


class ThreadBusy(UsageError):
    """Another process (a run, a resume, the daemon) is driving this thread right now."""


class ModelError(KasloopError):
    """The model call failed: transport error, HTTP status, or an unusable reply."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[type, tuple[str], dict[str, bool]]:  # type: ignore[override]
        return (self.__class__, (self.message,), {"transient": self.transient})


class ScriptExhausted(ModelError):
    """A ``scripted:FILE`` model was asked for more turns than the script has."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message, transient=transient)


class CheckpointError(KasloopError):
    """The kasloop database could not be opened, read or written."""


class LocalModelError(KasloopError):
    """The embedded local model could not be installed, started or reached."""


class BudgetExceeded(KasloopError):
    """The next step or call would cross a hard budget."""

    exit_code = 11


def escaped(text: str) -> str:
    """``text`` printable: bytes that were not UTF-8 (lone surrogates) as ``\\xNN``, everything else as is."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if _not_utf8(text) else text


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(text: str, what: str) -> str:
    """``text`` unchanged if it is valid Unicode text, else a ``UsageError`` naming ``what`` (exit 2).

    A string decoded with ``surrogateescape`` (command-line arguments, environment variables, file
    names) keeps bytes that were not UTF-8 as lone surrogates, which no database, JSON file or terminal
    can store; they are refused where they come in, with the bytes shown escaped.
    """
    if _not_utf8(text):
        shown = escaped(text)
        shown = shown if len(shown) <= 80 else shown[:79] + "…"
        raise UsageError(f"{what} is not valid UTF-8 text (`{shown}`); pass it as UTF-8.")
    return text
