"""How a tool family is configured: one :class:`ToolSettings` model per family.

A tool family's settings (``tool_settings.<family>`` in kasloop.toml, ``ToolContext.extra[<family>]``) are
one pydantic model per family, a :class:`ToolSettings` subclass: unknown keys and wrong types are refused,
and :meth:`ToolSettings.from_context` turns the first problem into one ``permanent`` line that names the
key and the fix (:class:`SettingsFailure`); :func:`kasloop.tools.registry.check_tool_settings` checks the
same models when kasloop.toml loads. It builds on the tool contract (:mod:`kasloop.tools.contract`) and is
apart from it because configuring a family is its own concern, the one way every family is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from kasloop.tools.contract import ToolContext, ToolFailure

__all__ = ["SettingsFailure", "ToolSettings", "settings_failure"]


class SettingsFailure(ToolFailure):
    """A family's settings table is broken: always ``permanent``, with the family, the key and the problem apart.

    The message is one line: ``shell config `timeout`: Input should be greater than 0; fix
    tool_settings.shell in kasloop.toml``.
    """

    def __init__(self, family: str, key: str, problem: str) -> None:
        where = f" `{key}`" if key else ""
        super().__init__("permanent", f"{family} config{where}: {problem}; fix tool_settings.{family} in kasloop.toml")
        self.family = family
        self.key = key
        self.problem = problem

    def __reduce__(self) -> tuple[type[SettingsFailure], tuple[str, str, str]]:
        return (SettingsFailure, (self.family, self.key, self.problem))


class ToolSettings(BaseModel):
    """Base of every tool family's settings model: the one way a family is configured.

    A family subclasses it, names itself in ``family`` and declares its keys as fields with defaults and
    docstrings (the table may be empty)::

        class ShellSettings(ToolSettings):
            family: ClassVar[str] = "shell"
            timeout: float = Field(default=60.0, gt=0)  # default seconds per call

    and reads its table with ``ShellSettings.from_context(ctx)``. Unknown keys are refused
    (``extra="forbid"``) and values are not coerced (``strict``: ``"yes"`` is not a bool, ``"60"`` not a
    number; an int is still a valid float). A field that should accept another spelling says so itself,
    e.g. ``Field(strict=False)`` for a tuple written as a TOML list. Checks that need the call's context
    read it from the validation context (``info.context["workspace"]``, see :meth:`from_context`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    family: ClassVar[str] = ""
    """The key of the table in ``tool_settings`` (and in ``ToolContext.extra``)."""

    @classmethod
    def from_mapping(cls, raw: Any, *, workspace: Path | None = None) -> Self:
        """Validate a settings table (``None``: all defaults).

        Raises:
            SettingsFailure: the first problem, in one line naming the key and the fix.
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise SettingsFailure(cls.family, "", f"must be a table of settings, got `{raw!r}`")
        try:
            return cls.model_validate(raw, context={"workspace": workspace})
        except ValidationError as exc:
            raise settings_failure(cls, exc) from None

    @classmethod
    def from_context(cls, ctx: ToolContext) -> Self:
        """The settings of this call: ``ctx.extra[family]`` validated, with ``ctx.workspace`` as context."""
        return cls.from_mapping(ctx.extra.get(cls.family), workspace=ctx.workspace)


def settings_failure(model: type[ToolSettings], error: ValidationError) -> SettingsFailure:
    """The first error of ``error`` as a :class:`SettingsFailure` (an unknown key lists the known ones)."""
    errors = error.errors()
    first = errors[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
        problem = f"unknown key; known keys: {', '.join(model.model_fields)}"
    elif first["type"] == "value_error" and first.get("ctx", {}).get("error") is not None:
        problem = str(first["ctx"]["error"])  # a validator's own sentence, without pydantic's "Value error, "
    else:
        problem = first["msg"]
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more)"
    return SettingsFailure(model.family, key, problem)
