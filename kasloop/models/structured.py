"""Structured results: the JSON schema a thread's final answer must match, and the check of an answer.

A person gives the schema (``Agent.run(goal, output=SomeModel)``, ``kasloop run --output-schema FILE``);
it is stored with the task in the thread's state, so a resume in another process checks the answer the
same way. The model is told the schema in the system prompt (kasloop's own text: a person wrote it) and
answers with a JSON value in plain text; no provider feature is needed, so every model (scripted, the
embedded local one, any provider) works the same. An answer that does not parse or does not match is
not raised: decide turns it into a failure the recovery ladder handles (the model hears exactly what is
wrong and answers again; after ``MAX_CONSECUTIVE_FAILURES`` a fallback model, then a human or, at level 4,
an escalated stop).

The schema is checked with the ``jsonschema`` library (the dialect the schema names, 2020-12 when it
names none: what pydantic writes). With the Python class at hand (``output=`` given to this process),
the class validates too, so its own validators' errors also go back to the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ValidationError

from kasloop.errors import UsageError

__all__ = ["BAD_OUTPUT", "OutputSpec", "answer_instruction", "check_answer", "output_class", "output_schema", "read_schema_file"]

BAD_OUTPUT = "bad_output"
"""The ``last_error`` kind of a final answer that does not match the schema."""

OutputSpec = type[BaseModel] | dict[str, Any]
"""What ``output=`` takes: a pydantic model class, or a JSON schema as a dict."""

_MAX_ERRORS = 3
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def output_schema(output: OutputSpec) -> dict[str, Any]:
    """The JSON schema for ``output`` (a pydantic class's own, or a dict checked as a schema).

    Raises:
        UsageError: not a pydantic class or a mapping, or not a valid JSON schema.
    """
    if isinstance(output, type) and issubclass(output, BaseModel):
        return output.model_json_schema()
    if not isinstance(output, dict):
        raise UsageError(f"output= takes a pydantic model class or a JSON schema dict, not {type(output).__name__}.")
    try:
        validator_for(output, default=Draft202012Validator).check_schema(output)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top)"
        raise UsageError(f"The output schema is not a valid JSON schema at {where}: {exc.message}; fix it and run again.") from None
    return output


def output_class(output: OutputSpec | None) -> type[BaseModel] | None:
    """The pydantic class in ``output`` (None for a schema dict or nothing): it validates and builds ``RunResult.value``."""
    return output if isinstance(output, type) and issubclass(output, BaseModel) else None


def read_schema_file(path: Path) -> dict[str, Any]:
    """``--output-schema FILE``: the schema in a JSON file, checked; one-line errors for a missing or bad file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read the output schema {path}: {exc.strerror or exc}; give a JSON schema file.") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"The output schema {path} is not JSON (line {exc.lineno}: {exc.msg}); give a JSON schema file.") from None
    return output_schema(schema)


def answer_instruction(schema: dict[str, Any]) -> str:
    """The system prompt's last line for a task with a schema (compact: small models pay for every token)."""
    return (
        "When the task is done, reply with only a JSON value (no other text) that matches this JSON schema: "
        + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    )


def answer_shape(schema: dict[str, Any]) -> str | None:
    """An object schema's answer as a skeleton (``{"city": <string>, "high_c": <number>}``): small models fill
    in a template far more often than they follow a schema. None for any other schema."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        return None
    slots = []
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        slots.append(f"{json.dumps(name)}: <{kind if isinstance(kind, str) else 'value'}>")
    return "{" + ", ".join(slots) + "}"


def _parse(text: str) -> Any:
    """The JSON value in ``text``: all of it, a fenced block, or the outermost object or list in it."""
    candidates = [text.strip(), *(m.strip() for m in _FENCED.findall(text))]
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError("the answer is not JSON")


def check_answer(text: str, schema: dict[str, Any], model: type[BaseModel] | None = None) -> tuple[Any, str | None]:
    """``(value, None)`` for an answer that matches ``schema`` (and ``model``, when given); else
    ``(None, what is wrong)``: a message for the model, naming the first few problems and their places."""
    try:
        value = _parse(text)
    except ValueError:
        shape = answer_shape(schema)
        like = f" shaped like {shape}" if shape else ""
        return None, f"your final answer is not JSON. Reply with only a JSON value{like} that matches the schema in the instructions"
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    problems = [f"at {_where(e.absolute_path)}: {e.message}" for e in errors[:_MAX_ERRORS]]
    if not problems and model is not None:
        try:
            value = model.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            problems = [f"at {_where(e['loc'])}: {e['msg']}" for e in exc.errors()[:_MAX_ERRORS]]
    if problems:
        more = f" (and {len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
        return None, "your final answer does not match the output schema: " + "; ".join(problems) + more + ". Reply with only the corrected JSON"
    return value, None


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/" + "/".join(parts) if parts else "the top level"
