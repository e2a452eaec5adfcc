"""Loading an ``AgentConfig`` from ``kasloop.toml``, ``KASLOOP_*`` variables and flags.

Later sources win: file, then environment, then flags. Every problem becomes
one ``ConfigError`` line naming the key and the source.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kasloop.config.schema import AgentConfig
from kasloop.errors import ConfigError, KasloopError

__all__ = ["describe_validation_error", "load_config", "resolve_home"]

CONFIG_FILE = "kasloop.toml"


class _EnvSettings(BaseSettings):
    """``KASLOOP_*`` variables that map onto config keys."""

    model_config = SettingsConfigDict(env_prefix="KASLOOP_", extra="ignore")

    autonomy: int | None = None
    model: str | None = None
    tools: str | None = None
    workspace: str | None = None
    max_steps: int | None = None
    openai_base_url: str | None = None


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line for the first problem of a pydantic error: key, what is wrong, where from."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "is not a known setting (check the spelling; see docs/configuration.md)"
    return f"Invalid setting `{key}` in {source}: {msg}."


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _read_file(path: Path) -> dict[str, Any]:
    """The TOML file's table; a missing, unreadable, non-UTF-8 or invalid file is one ``ConfigError`` line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file `{path}` does not exist; create it or drop --config.") from None
    except OSError as exc:
        raise ConfigError(f"Config file `{path}` cannot be read: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        line_no = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"Config file `{path}` line {line_no} is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file `{path}` is not valid TOML: {exc}.") from None


def _env_values() -> dict[str, Any]:
    try:
        env = _EnvSettings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "KASLOOP_* environment variables")) from None
    values: dict[str, Any] = {}
    for key in ("autonomy", "model", "workspace"):
        if getattr(env, key) is not None:
            values[key] = getattr(env, key)
    if env.tools is not None:
        values["tools"] = _split_list(env.tools)
    if env.max_steps is not None:
        values.setdefault("budgets", {})["max_steps"] = env.max_steps
    base_url = env.openai_base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url:
        values.setdefault("openai", {})["base_url"] = base_url
    if os.environ.get("OPENAI_API_KEY"):
        values.setdefault("openai", {})["api_key"] = os.environ["OPENAI_API_KEY"]
    return values


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    config_file: Path | None = None,
    *,
    cwd: Path | None = None,
    **flags: Any,
) -> AgentConfig:
    """Build the config: ``kasloop.toml`` (or ``config_file``, or ``$KASLOOP_CONFIG``), env, then non-None flags.

    Flags use config keys, with ``max_steps`` and ``tools`` (a comma list) accepted too.
    """
    cwd = cwd or Path.cwd()
    values: dict[str, Any] = {}
    source = "defaults"
    if config_file is None and os.environ.get("KASLOOP_CONFIG"):
        config_file = Path(os.environ["KASLOOP_CONFIG"])  # a server's graphs (langgraph.json) have no --config
    path = config_file or (cwd / CONFIG_FILE)
    if config_file is not None or path.exists():
        values = _read_file(path)
        source = f"`{path}`"
    values = _merge(values, _env_values())
    flag_values: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key == "max_steps":
            flag_values.setdefault("budgets", {})["max_steps"] = value
        elif key == "tools" and isinstance(value, str):
            flag_values["tools"] = _split_list(value)
        else:
            flag_values[key] = value
    values = _merge(values, flag_values)
    try:
        return AgentConfig(**values)
    except ValidationError as exc:
        where = f"{source}, the environment or the flags" if flag_values else source
        raise ConfigError(describe_validation_error(exc, where)) from None
    except KasloopError:
        raise


def resolve_home(home: Path | None = None, *, cwd: Path | None = None) -> Path:
    """The kasloop home: ``--home``, else ``KASLOOP_HOME``, else ``.kasloop`` in the working directory."""
    if home is not None:
        return home
    if os.environ.get("KASLOOP_HOME"):
        return Path(os.environ["KASLOOP_HOME"])
    return (cwd or Path.cwd()) / ".kasloop"
