"""Tier-3 long-term memory: what one item is and how it is exported (``items``), and the store of them that
outlives any thread (``long_term``: ``LongTermMemory``, trust marks, the memory a tool run shares).

This package file imports nothing, so importing one module does not load the others.
"""
