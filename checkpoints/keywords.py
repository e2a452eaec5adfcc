"""Free text as a keyword query, for long-term memory's search on either engine (pure functions).

User text like ``foo"bar OR (`` is never parsed as query syntax: only word
characters survive, stopwords are dropped, at most :data:`MAX_QUERY_TERMS`
terms are kept. ``fts_query`` writes them for SQLite's FTS5 (``KasloopStore``),
``ts_query`` for PostgreSQL's full-text search (``KasloopPostgresStore``).
"""

from __future__ import annotations

import re

__all__ = ["MAX_QUERY_TERMS", "STOPWORDS", "fts_query", "query_terms", "ts_query"]

MAX_QUERY_TERMS = 32

# Words that match nearly every item; dropping them keeps the ranking on the words that matter.
STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be because been before being but by can could did do does
    doing done for from had has have having he her here hers him his how i if in into is it its itself just me more most
    my no nor not now of off on once only or other our ours out over own same she should so some such than that the
    their theirs them then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours""".split()
)


def query_terms(text: str) -> list[str]:
    """The distinct lower-cased words of ``text`` that are not stopwords, first :data:`MAX_QUERY_TERMS` of them."""
    terms: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if word not in STOPWORDS and word not in terms:
            terms.append(word)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return terms


def fts_query(text: str) -> str | None:
    """Free text as a safe FTS5 query: quoted terms joined by OR, or ``None`` if nothing is left.

    bm25 then ranks items matching more (and rarer) terms first.
    """
    terms = query_terms(text)
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


def ts_query(text: str) -> str | None:
    """Free text as a safe PostgreSQL tsquery: the same words as ``fts_query``, joined by OR; None if none."""
    terms = query_terms(text)
    return " | ".join(terms) if terms else None
