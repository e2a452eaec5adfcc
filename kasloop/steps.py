"""Guided steps: a goal of several steps, shown to a small model one step at a time.

Why: measured on the embedded 0.5B model (5 seeds each), "Read a.txt and write
the same text into b.txt" made it write b.txt at once with the task's own
words, and "List the files in the workspace and write their names into
files.txt" made it list the files and then say it was done: 0 of 5 runs each.
Shown the current step after the conversation ("Step 2 of 2: Write the same
text into b.txt") it did each step right. Strong models plan on their own, so
guidance is for small models: on for the embedded ``local`` model, and for any
model when ``guide_steps = true``.

The steps come from the goal's own text, deterministically: numbered or
bulleted lines, or clauses joined by "then", ";" or "and" followed by an
imperative verb ("... and write ..."). Quoted text and everything after a
colon are content, never split. A goal that does not split is one step and
gets no step line; once a call that changes something succeeds, it is asked whether it is done (see :data:`SINGLE_DONE_TEMPLATE`).

Progress is kept in the state (``plan``): a step is done when a call
succeeds that was not done before in the task (act moves ``current`` on).
A model that answers in plain text while steps are left is shown the next
step again, at most :data:`NUDGES_PER_STEP` times for each step; then its
answer stands.
"""

from __future__ import annotations

import re

from typing_extensions import TypedDict  # not typing's: on Python < 3.12 pydantic builds no JSON schema from it (Studio's input form)

__all__ = [
    "ANSWER_STEP", "MAX_STEPS", "NUDGES_PER_STEP", "Plan", "SINGLE_DONE_TEMPLATE", "STRUCTURED_DONE", "advanced", "echoes_step_prompt", "new_plan", "nudged",
    "should_nudge", "split_steps", "step_prompt", "waits",
]

MAX_STEPS = 8
"""Steps at most: a longer goal is not a small model's job, and its tail stays one step."""
NUDGES_PER_STEP = 2
"""Plain-text answers given the next step again, per step, before the answer is taken as final."""

DONE_TEMPLATE = "Done. Now answer the user in plain text, not JSON."
SINGLE_DONE_TEMPLATE = "The call succeeded. If nothing else is needed, answer the user in plain text, not JSON."
STRUCTURED_DONE = {
    DONE_TEMPLATE: "Done. Now answer with only the JSON value the instructions ask for.",
    SINGLE_DONE_TEMPLATE: "The call succeeded. If nothing else is needed, answer with only the JSON value the instructions ask for.",
}
"""The same lines for a task with an output schema (``kasloop.models.structured``): there JSON *is* the answer."""
"""Shown for a one-step goal once a call that changes something succeeded.

Why: measured on the 0.5B model with the README demo's goal ("Create notes.md
containing the line: ..."), after the write it called files_write again with
its own tool result as content, then with kasloop's refusal of that, until the
token limit cut it off (every seed). Told this line, it answers instead. A
one-step goal may still need several calls, so the line leaves that open."""

STEP_VERBS = (
    "add append ask calculate check copy count create delete download edit email extract fetch find get "
    "list make move open post print put read remove rename replace reply report run save search send "
    "store summarise summarize tell update upload write"
).split()
"""Imperative verbs that start a new step after "and" ("read a.txt and write ...")."""

_WAITS = re.compile(r"\buntil\b", re.IGNORECASE)
_ANSWERS = re.compile(r"^(?:tell|say|answer)\b", re.IGNORECASE)
ANSWER_STEP = "Now answer the user in plain text: "
"""Shown for a last step that only asks for the answer ("Tell me its exit code."): measured on the 0.5B model
polling a process, shown "Step 3 of 3: Tell me its exit code." it called process_status again (4 of 4)."""

_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(\S.*)$")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^'\s][^']*'|`[^`]*`|“[^”]*”")
_LEAD_IN = re.compile(r"^\s*(?:and\s+)?(?:then|finally|after that|next),?\s+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_JOINER = re.compile(
    r"\s*;\s*(?:then\s+)?|,?\s+(?:and\s+)?then\s+|,?\s+and\s+(?=(?:" + "|".join(STEP_VERBS) + r")\b)",
    re.IGNORECASE,
)


class Plan(TypedDict):
    steps: list[str]
    current: int
    """Index of the first step not done yet (``len(steps)`` when all are)."""
    nudges: int
    """Plain-text answers given the current step again so far."""


def _capitalised(text: str) -> str:
    text = text.strip().rstrip(",;")
    return text[:1].upper() + text[1:]


def _clauses(sentence: str) -> list[str]:
    """The clauses of one (masked) sentence, or the sentence whole if a clause would be a lone word."""
    clauses = [_LEAD_IN.sub("", piece) for piece in _JOINER.split(sentence) if piece.strip()]
    if any(len(clause.split()) < 2 for clause in clauses):
        return [sentence]  # "Search and replace" is one action, not two
    return clauses


def _split_text(text: str) -> list[str]:
    """Sentences, then clauses; quoted text and everything after the first colon are content, never split."""
    head, colon, tail = text.partition(": ")
    masked: list[str] = []

    def mask(match: re.Match[str]) -> str:
        masked.append(match.group(0))
        return f"\x00{len(masked) - 1}\x00"

    unmask = re.compile(r"\x00(\d+)\x00")
    masked_head = _QUOTED.sub(mask, head)
    pieces = [_capitalised(unmask.sub(lambda m: masked[int(m.group(1))], clause))
              for sentence in _SENTENCE_END.split(masked_head) for clause in _clauses(sentence)]
    if colon:  # the content, as written, to the last character
        pieces = [*pieces[:-1], (pieces[-1] if pieces else "") + colon + tail]
    return pieces


def split_steps(goal: str) -> list[str]:
    """The steps of ``goal`` (``[goal]`` if it is one step).

    >>> split_steps("Read a.txt and write the same text into b.txt.")
    ['Read a.txt', 'Write the same text into b.txt.']
    >>> split_steps("Create numbers.txt containing the numbers 1, 2 and 3, one per line.")
    ['Create numbers.txt containing the numbers 1, 2 and 3, one per line.']
    """
    text = goal.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    items = [m.group(1).strip() for m in map(_LIST_ITEM.match, lines) if m]
    steps = items if len(items) >= 2 else _split_text(" ".join(lines))
    steps = [s for s in steps if s]
    if any(len(step.split()) < 2 for step in steps):
        return [text]  # "Hello. Create a.txt": a lone word is not a step of its own
    if len(steps) > MAX_STEPS:
        steps = [*steps[: MAX_STEPS - 1], " ".join(steps[MAX_STEPS - 1 :])]
    return steps if len(steps) >= 2 else [text]


def new_plan(goal: str) -> Plan:
    return Plan(steps=split_steps(goal), current=0, nudges=0)


def advanced(plan: Plan | None, calls: int = 1, changes: int | None = None) -> Plan | None:
    """``plan`` after ``calls`` new calls succeeded (one step each): the next step not done is current.

    ``changes`` (how many of them changed something, i.e. were not reads) is what counts for a
    one-step goal: reading first is how such a goal starts, not how it ends."""
    if not plan or plan["current"] >= len(plan["steps"]):
        return plan
    if len(plan["steps"]) == 1 and changes is not None:
        calls = changes
    if calls <= 0:
        return plan
    return Plan(steps=plan["steps"], current=min(plan["current"] + calls, len(plan["steps"])), nudges=0)


def waits(plan: Plan | None) -> bool:
    """The current step waits for something ("check it ... until it has exited"): a poll that returns a result
    which can still change does not finish it; a final one does (see ``kasloop.nodes.observations``)."""
    return bool(plan) and plan["current"] < len(plan["steps"]) and bool(_WAITS.search(plan["steps"][plan["current"]]))


def step_prompt(plan: Plan | None, *, structured: bool = False) -> str | None:
    """What the model is shown after the conversation for a goal of several steps; None for one step.
    ``structured``: the task's answer is JSON for an output schema (the "done" lines ask for it).

    The wording is the one that measured best on the 0.5B model (16 of 16 right calls for a second
    step, against 5 of 8 for "Step 1 (...) is done. Now do step 2 of 2: ..."). Once every step is
    done it is told so: without that it went on calling the last tool with that tool's result (12 of
    12 times); told "Done. Now answer the user in plain text", it answered (12 of 12).
    """
    if not plan:
        return None
    steps, current = plan["steps"], plan["current"]
    if len(steps) < 2:
        done = SINGLE_DONE_TEMPLATE if current >= 1 else None
    elif current >= len(steps):
        done = DONE_TEMPLATE
    elif current == len(steps) - 1 and _ANSWERS.match(steps[current]) and not structured:
        return ANSWER_STEP + steps[current]
    else:
        return f"Step {current + 1} of {len(steps)}: {steps[current]}"
    return STRUCTURED_DONE[done] if structured and done is not None else done


_STEP_LINE = re.compile(r"^step \d+ of \d+:")


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9:]+", " ", text.lower()).split())


def echoes_step_prompt(text: str) -> bool:
    """The answer only repeats what kasloop showed the model (measured on the 0.5B model: after
    :data:`SINGLE_DONE_TEMPLATE` it sometimes answers with that very sentence). Such an answer ends the
    run like any other, but it is kasloop's line, not the model's: the run's output says what was done instead."""
    said = _words(text)
    if not said:
        return False
    return (
        said in {_words(line) for pair in STRUCTURED_DONE.items() for line in pair}
        or bool(_STEP_LINE.match(said)) or said.startswith(_words(ANSWER_STEP))
    )


def should_nudge(plan: Plan) -> bool:
    """A plain-text answer now leaves steps undone, and the current step has nudges left (a last step that
    only asks for the answer is done by answering)."""
    steps, current = plan["steps"], plan["current"]
    answering = current == len(steps) - 1 and bool(_ANSWERS.match(steps[current]))
    return len(steps) >= 2 and current < len(steps) and plan["nudges"] < NUDGES_PER_STEP and not answering


def nudged(plan: Plan) -> Plan:
    return Plan(steps=plan["steps"], current=plan["current"], nudges=plan["nudges"] + 1)
