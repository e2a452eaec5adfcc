"""Configuration values: what an agent may do, with what, and within which limits.

These are frozen values. A thread stores its policy part (autonomy, tools,
rules, budgets, workspace, model) when it starts, so a resumed thread keeps the
limits it was started with whatever the resuming process passes; secrets are
never stored with the thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kasloop.config.connections import MCP_NAME, McpServer, OpenAISettings, ProviderSettings, Risk, ToolTraitSettings
from kasloop.safety.approval_secrets import require_approval_secret
from kasloop.safety.receivers import declare, parse_address
from kasloop.errors import AutonomyLevelError
from kasloop.config.mail import ImapSettings

__all__ = [
    "AUTONOMY_LEVELS",
    "AgentConfig",
    "ApprovalChannels",
    "Collaboration",
    "EmailApprovals",
    "TelegramApprovals",
    "WebhookApprovals",
    "Budgets",
    "ModelPrice",
    "McpServer",
    "OpenAISettings",
    "ProviderSettings",
    "DEFAULT_TEAM",
    "PolicyRule",
    "Risk",
    "Specialist",
    "ToolTraitSettings",
    "RuleAction",
    "check_autonomy",
]

RuleAction = Literal["allow", "deny", "ask"]

AUTONOMY_LEVELS: dict[int, str] = {
    2: "copilot: a human approves every tool call",
    3: "semi-autonomous: acts alone within guardrails; risky calls need approval",
    4: "autonomous: acts and recovers alone; policy denials are final",
}

_LOW_LEVELS = {
    0: "level 0 would mean a script: fixed logic with no model deciding anything",
    1: "level 1 would mean assisted: the model only suggests and a human carries out every step",
}


def check_autonomy(level: int) -> int:
    """Return ``level`` if kasloop runs it, else raise a message that explains the choice."""
    if level in AUTONOMY_LEVELS:
        return level
    if level in _LOW_LEVELS:
        raise AutonomyLevelError(
            f"Autonomy level `{level}` is not supported: {_LOW_LEVELS[level]}, which needs no agent "
            "loop. kasloop starts at 2 (copilot: it proposes each tool call and waits for your "
            "approval). Use --autonomy 2, 3 or 4."
        )
    raise AutonomyLevelError(
        f"Autonomy level `{level}` does not exist; choose 2 (approve every call), "
        "3 (approve risky calls) or 4 (fully autonomous) with --autonomy or `autonomy` in kasloop.toml."
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyRule(_Frozen):
    """A standing decision for matching tool calls.

    Rules beat levels: ``deny`` refuses the call at every level, ``ask`` always
    asks a human, ``allow`` runs it without asking (except for a side effect after
    untrusted content at level 3). When several rules match, the strictest wins
    (deny > ask > allow).
    """

    tool: str
    """Tool name or glob, e.g. ``files_*``."""
    action: RuleAction
    args: dict[str, str] = Field(default_factory=dict)
    """Argument name → glob the argument's string form must match, e.g. ``{"path": "notes/*"}``."""


class Budgets(_Frozen):
    """Hard limits, checked before every model and tool call. ``None`` switches a limit off.

    "Per run" counts from a ``run`` (or a ``tell`` that restarts a finished thread) until it ends;
    the day limits add up every thread of the database for the current UTC day.
    """

    max_steps: int | None = 50
    """Perceive→decide→act cycles per run."""
    max_tool_calls: int | None = None
    """Tool calls per run."""
    max_tokens: int | None = None
    """Model tokens (prompt + reply, summaries included) per run."""
    max_usd: float | None = None
    """Model spend in USD per run, priced with ``prices``."""
    max_seconds: float | None = None
    """Working seconds per run: time spent in model and tool calls (not waiting for a human)."""
    max_tokens_per_day: int | None = None
    """Model tokens per UTC day, all threads of the database together."""
    max_usd_per_day: float | None = None
    """Model spend in USD per UTC day, all threads of the database together."""

    @field_validator("max_steps", "max_tool_calls", "max_tokens", "max_tokens_per_day")
    @classmethod
    def _positive(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @field_validator("max_usd", "max_seconds", "max_usd_per_day")
    @classmethod
    def _above_zero(cls, value: float | None, info: Any) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"{info.field_name} must be > 0, got {value}")
        return value


class ModelPrice(_Frozen):
    """USD per million tokens of one model, for USD budgets."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class TelegramApprovals(_Frozen):
    """Approval requests as Telegram messages with Approve / Reject buttons, sent by kasloop's own approvals bot.

    The approvals bot is not the tools' bot (``tool_settings.telegram``): its token is in its own
    ``KASLOOP_APPROVAL_*`` variable, so no tool can send as it or read its button presses.
    """

    chat_id: int | str
    """Where requests are posted."""
    approvers: list[int] = Field(min_length=1)
    """Telegram user ids whose button presses count; anyone else's are refused and logged."""
    token_env: str = "KASLOOP_APPROVAL_TELEGRAM_TOKEN"
    """Environment variable with the approvals bot's token (a ``KASLOOP_APPROVAL_*`` variable; never the tools' token)."""
    base_url: str | None = None
    """Bot API base URL of the approvals bot; default: ``tool_settings.telegram.base_url``, else Telegram's."""

    @model_validator(mode="after")
    def _own_secret(self) -> TelegramApprovals:
        require_approval_secret("approval_channels.telegram.token_env", self.token_env)
        return self


class EmailApprovals(_Frozen):
    """Approval requests by email (sent with ``tool_settings.email.smtp``), decided by a reply read from the approvals' own mailbox."""

    to: str
    """Where requests are sent."""
    approvers: list[str] = Field(min_length=1)
    """Addresses whose replies count. A reply must also quote the request's one-time code."""
    imap: dict[str, Any]
    """The mailbox replies arrive in, with its own login (as ``tool_settings.email.imap``: ``host``, ``port``,
    ``security``, ``username``, ``timeout``, ``ca_file``; password in ``password_env``, default
    ``KASLOOP_APPROVAL_IMAP_PASSWORD``). Not the tools' mailbox: no email tool can read the replies."""
    folder: str = "INBOX"
    """IMAP folder the replies arrive in."""

    @field_validator("imap")
    @classmethod
    def _mailbox(cls, value: dict[str, Any]) -> dict[str, Any]:
        mailbox = {"password_env": "KASLOOP_APPROVAL_IMAP_PASSWORD", **value}
        checked = ImapSettings.model_validate(mailbox)
        if not checked.username:
            raise ValueError("the approvals mailbox needs a username (its password is in password_env)")
        return mailbox

    @model_validator(mode="after")
    def _own_secret(self) -> EmailApprovals:
        require_approval_secret("approval_channels.email.imap.password_env", str(self.imap["password_env"]))
        return self


class WebhookApprovals(_Frozen):
    """Approval requests POSTed (HMAC-signed) to ``url``; decisions come back as signed callbacks to kasloop's receiver.

    Both directions are signed with the approval channel's own secret (``secret_env``), never with
    the webhook tools' secret: nothing a tool can sign is a valid decision.
    """

    url: str
    """Receiver of the requests (gated by ``tool_settings.webhook``)."""
    secret_env: str = "KASLOOP_APPROVAL_WEBHOOK_SECRET"
    """Environment variable with the HMAC secret shared with the approvers' side (a ``KASLOOP_APPROVAL_*`` variable)."""

    @model_validator(mode="after")
    def _own_secret(self) -> WebhookApprovals:
        require_approval_secret("approval_channels.webhook.secret_env", self.secret_env)
        return self


class ApprovalChannels(_Frozen):
    """Where approval requests go besides ``kasloop approvals`` and the Python API."""

    telegram: TelegramApprovals | None = None
    email: EmailApprovals | None = None
    webhook: WebhookApprovals | None = None
    receivers: list[str] = Field(default_factory=list)
    """``host:port`` of every server that takes decisions for kasloop (where ``approvals_app`` is served,
    a LangGraph dev server): no tool (http, webhook, browser, email) may reach them, whatever ``allow_private`` says.
    Receivers kasloop serves itself (``serve_approvals``) are refused without being listed."""

    @field_validator("receivers")
    @classmethod
    def _receivers(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, port = parse_address(entry)  # ValueError names the entry
            declare(host, port, "approvals receiver (approval_channels.receivers)")
        return value


class Specialist(_Frozen):
    """One member of a team: the manager delegates tasks to it by name.

    A specialist gets only its own tools (least privilege) and never more
    autonomy than the manager: its level is ``min(autonomy, manager's)``.
    """

    description: str
    """One sentence the manager reads to choose whom to ask."""
    tools: list[str] = Field(min_length=1)
    """Tool families or single tools; the specialist gets nothing else."""
    autonomy: int | None = None
    """Its level, capped at the manager's; ``None``: the manager's."""
    model: str | list[str] | None = None
    """Its model spec or fallback list; ``None``: the manager's."""
    max_steps: int = Field(default=20, ge=1)
    """Cycles per task it is given (the manager's remaining budgets cap it too)."""

    @field_validator("autonomy")
    @classmethod
    def _autonomy(cls, value: int | None) -> int | None:
        return None if value is None else check_autonomy(value)


DEFAULT_TEAM: dict[str, Specialist] = {
    "research": Specialist(description="Finds facts: fetches web pages and reads them in a browser.", tools=["http", "browser"]),
    "code": Specialist(description="Reads and writes files in the workspace and runs allowed shell commands.", tools=["files", "shell"]),
    "communication": Specialist(description="Sends and reads email, sends Telegram messages and posts webhooks.", tools=["email", "telegram", "webhook"]),
    "operations": Specialist(description="Starts, watches and stops long-running processes.", tools=["process"]),
}
"""``kasloop run --team default``: four specialists, one per kind of work (``[team.default]`` replaces it)."""


class Collaboration(_Frozen):
    """Peers with equal authority taking turns on one problem over a shared blackboard.

    Prefer it to a team when the value is in peers checking each other (a
    solver and a verifier who must agree) rather than in one planner splitting
    the work. It ends ``done`` when every peer proposes the same answer, or
    ``escalated`` after ``turn_limit`` turns.
    """

    peers: dict[str, Specialist] = Field(min_length=1)
    """The peers by name, in speaking order (``[collaboration.NAME.peers.PEER]`` tables)."""
    turn_limit: int = Field(default=6, ge=1)
    """Peer turns in all; reached without agreement, the run is escalated to a human."""


class AgentConfig(_Frozen):
    """Everything that decides what an agent may do.

    Example:
        ``AgentConfig(autonomy=3, model="scripted:plan.jsonl", tools=["files"], workspace="ws")``
    """

    autonomy: int = 3
    """2, 3 or 4; see ``AUTONOMY_LEVELS``."""
    model: str | list[str] | None = None
    """Model spec (``scripted:FILE``, ``openai:NAME``, ``local``, or ``PROVIDER:NAME`` for any provider of
    LangChain's ``init_chat_model``, e.g. ``anthropic:claude-sonnet-4-5``) or a fallback list (providers may mix).
    ``None``: ``openai:gpt-4o-mini`` if an OpenAI key is set, else the embedded ``local`` model."""
    tools: list[str] = Field(default_factory=lambda: ["files"])
    """Tool families or single tools the agent gets; it gets nothing else."""
    workspace: Path = Path(".")
    """The root every file tool is jailed to."""
    rules: list[PolicyRule] = Field(default_factory=list)
    risk_overrides: dict[str, Risk] = Field(default_factory=dict)
    """Tool name → risk, to make a tool stricter (or looser) than its default."""
    budgets: Budgets = Field(default_factory=Budgets)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Model spec, model name or kind → price, e.g. ``{"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}}``;
    laid over kasloop's defaults (local and scripted models are free)."""
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    """Connection settings of other model providers, by provider (``[providers.anthropic]``, ``[providers.ollama]``)."""
    mcp: dict[str, McpServer] = Field(default_factory=dict)
    """MCP servers by name (``[mcp.NAME]``); ``tools`` selects all of a server's tools by ``NAME`` or one by ``NAME__tool``."""
    tool_traits: dict[str, ToolTraitSettings] = Field(default_factory=dict)
    """Your own tools' gating traits by tool name (``[tool_traits.NAME]``: risk, idempotent, untrusted, family, timeout)."""
    tool_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-family tool settings, e.g. ``{"http": {"allow_domains": ["example.org"]}}`` (see the tools reference)."""
    secret_env: list[str] = Field(default_factory=list)
    """More environment variables whose values are secrets, redacted everywhere kasloop records text
    (the OpenAI key and the variables tool settings name are always included)."""
    protected_paths: list[Path] = Field(default_factory=list)
    """More files or folders no tool may read, write, move or see from the sandbox (secret files, keys);
    kasloop's home, database, config in use, model cache and every ``*_file`` setting always are."""
    system_prompt: str | None = None
    """Replaces the built-in system prompt."""
    model_seed: int = 1234
    """Sampling seed of the embedded ``local`` model's first turn; each turn adds its number, so a
    thread replays the same way and a retry (a new turn) samples anew."""
    guide_steps: bool | None = None
    """Show the model a goal of several steps one step at a time ("Step 2 of 2: ..."), and show it the
    next step when it answers before all are done (see "Guided steps"). ``None``: on for the embedded
    ``local`` model, off for others; ``true`` helps any small model."""
    max_messages: int = 40
    """Working memory, in messages: past it the oldest turns are folded into the running summary
    (never splitting a tool call from its result)."""
    context_tokens: int = Field(default=4000, ge=200)
    """Working memory, in (approximate) tokens of messages sent to the model; past it the oldest turns
    are folded into the running summary, so the prompt stays bounded however long a thread runs."""
    stall_cycles: int = Field(default=10, ge=2)
    """Cycles in a row without progress (no call succeeded that was not done before in the task) after
    which the model is told it is stuck and must re-plan; the second time the task escalates."""
    poll_backoff: float = Field(default=1.0, ge=0)
    """Seconds before an identical read (a poll: ``process_status``, a file, a page) runs again once it came back
    unchanged; doubles with each unchanged result (up to ``poll_backoff_max``)."""
    poll_backoff_max: float = Field(default=60.0, ge=0)
    poll_limit: int = Field(default=5, ge=2)
    """Identical results in a row after which a poll is not run again: the model is told to wait or stop."""
    diagnose_with_model: bool = True
    """After a failure that is not retried, ask the model (in a short side call without tools) for the
    cause and a changed plan; its answer is what decide sees as "Last problem"."""
    tool_retries: int = 2
    """Retries of a tool call that failed with a transient error."""
    retry_backoff: float = 0.5
    """Seconds before the first retry; doubles each time (with jitter)."""
    approval_channels: ApprovalChannels = Field(default_factory=ApprovalChannels)
    """Telegram, email and webhook channels for approval requests (see "Approval channels")."""
    approval_ttl: float = Field(default=86400.0, gt=0)
    """Seconds an approval request stays valid."""
    keep_checkpoints: int = Field(default=10, ge=2)
    """Checkpoints kept per thread (newest first); older ones are pruned while the thread runs, so the
    database grows with the event log, not with every node ever run."""
    ask_after_untrusted: bool = True
    """At level 3, a side effect (any call that is not ``read``) needs approval while outside content
    (results of http, browser, email, telegram, webhook tools) is in working memory, even if a rule
    allows it: such content may carry injected instructions. ``False`` turns this off."""
    events_keep_days: float | None = Field(default=None, gt=0)
    """Event-log retention: rows older than this many days are deleted (whole rows, oldest first;
    none is ever rewritten). ``None`` keeps the whole history."""
    events_keep_last: int | None = Field(default=None, ge=100)
    """Event-log retention: at most this many of the newest rows per thread. ``None``: no limit."""
    approval_expiry: Literal["reject", "keep"] = "reject"
    """What an unanswered request becomes when it expires: ``reject`` (the model is told and plans
    again; applied by ``resume`` and the daemon) or ``keep`` (it waits for a human forever)."""
    durability: Literal["sync", "async", "exit"] = "sync"
    """When LangGraph writes checkpoints: ``sync`` (before the next node starts; a crash loses
    nothing), ``async`` (while the next node runs; faster, a crash may lose the last node) or
    ``exit`` (only when the run stops). The act ledger keeps recorded side effects from
    repeating in every mode; with ``async``/``exit`` a crash may make the model decide again."""
    team: dict[str, dict[str, Specialist]] = Field(default_factory=dict)
    """Named teams: ``[team.NAME.SPECIALIST]`` tables (``default`` is built in: research, code,
    communication, operations). ``run_team`` (``kasloop run --team NAME``) picks one."""
    run_team: str | None = None
    """Run as the manager of this team: the agent gets a ``delegate`` tool besides its own ``tools``
    and hands tasks to the team's specialists. ``None``: a single agent."""
    collaboration: dict[str, Collaboration] = Field(default_factory=dict)
    """Named collaborations: ``[collaboration.NAME]`` (``turn_limit``) with ``[collaboration.NAME.peers.PEER]``
    tables. ``run_collaboration`` (``kasloop run --collaboration NAME``) picks one."""
    run_collaboration: str | None = None
    """Run the goal as this collaboration of peers instead of a single agent (``None``: a single agent)."""

    @field_validator("autonomy")
    @classmethod
    def _autonomy(cls, value: int) -> int:
        return check_autonomy(value)

    @field_validator("max_messages")
    @classmethod
    def _window(cls, value: int) -> int:
        if value < 4:
            raise ValueError(f"max_messages must be >= 4, got {value}")
        return value

    @model_validator(mode="after")
    def _model_list(self) -> AgentConfig:
        if self.model is None:
            return self
        specs = [self.model] if isinstance(self.model, str) else self.model
        if not specs or not all(isinstance(s, str) and s for s in specs):
            raise ValueError("model must be a spec like `scripted:FILE`, `openai:NAME`, `anthropic:NAME` or `local`")
        return self

    @field_validator("mcp")
    @classmethod
    def _mcp_names(cls, value: dict[str, McpServer]) -> dict[str, McpServer]:
        for name in value:
            if not MCP_NAME.match(name) or "__" in name:
                raise ValueError(f"MCP server name `{name}` must be lower-case letters, digits and single underscores, starting with a letter")
        return value

    @field_validator("tool_traits")
    @classmethod
    def _tool_trait_names(cls, value: dict[str, ToolTraitSettings]) -> dict[str, ToolTraitSettings]:
        for name in value:
            if "__" in name:
                raise ValueError(f"`{name}` is an MCP tool: its risk and idempotence go in [mcp.{name.split('__')[0]}] (risk, idempotent)")
        return value

    @model_validator(mode="after")
    def _team_exists(self) -> AgentConfig:
        if self.run_team is not None and not self.team_members():
            known = ", ".join(sorted({"default", *self.team})) or "default"
            raise ValueError(f"team `{self.run_team}` is not defined; teams: {known} (add [team.{self.run_team}.NAME] tables to kasloop.toml)")
        return self

    @model_validator(mode="after")
    def _collaboration_exists(self) -> AgentConfig:
        if self.run_collaboration is None:
            return self
        if self.run_team is not None:
            raise ValueError("run_team and run_collaboration exclude each other: run a goal as a team or as a collaboration")
        if self.run_collaboration not in self.collaboration:
            known = ", ".join(sorted(self.collaboration)) or "none yet"
            raise ValueError(
                f"collaboration `{self.run_collaboration}` is not defined; collaborations: {known} "
                f"(add [collaboration.{self.run_collaboration}.peers.NAME] tables to kasloop.toml)"
            )
        return self

    def collaboration_peers(self) -> dict[str, Specialist]:
        """The peers of ``run_collaboration`` (empty when this agent is not a collaboration)."""
        chosen = self.collaboration.get(self.run_collaboration) if self.run_collaboration is not None else None
        return dict(chosen.peers) if chosen is not None else {}

    def team_members(self) -> dict[str, Specialist]:
        """The specialists of ``run_team`` (empty when this agent is not a team manager)."""
        if self.run_team is None:
            return {}
        if self.run_team in self.team:
            return dict(self.team[self.run_team])
        return dict(DEFAULT_TEAM) if self.run_team == "default" else {}

    @property
    def model_specs(self) -> list[str]:
        """The configured fallback chain of model specs, first one first (empty: not configured)."""
        if self.model is None:
            return []
        return [self.model] if isinstance(self.model, str) else list(self.model)

    def thread_policy(self) -> dict[str, Any]:
        """The part stored with a thread: no secrets, no connection settings."""
        return self.model_dump(mode="json", exclude={"openai", "providers"})

    def with_thread_policy(self, stored: dict[str, Any]) -> AgentConfig:
        """This config with a thread's stored policy laid over it (secrets stay from ``self``)."""
        merged = {**self.model_dump(mode="python", exclude={"openai", "providers"}), **stored}
        return AgentConfig(**merged, openai=self.openai, providers=self.providers)
