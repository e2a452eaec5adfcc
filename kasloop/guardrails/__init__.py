"""What keeps a thread inside its lines: the gate for each call (``policy``), hard budgets (``budget``),
and the approvals lifecycle a human decides through (``approvals``). What no config turns off
(protected paths, secrets, receivers) is ``kasloop.safety``, one floor below the config.

This package file imports nothing, so importing one module does not load the others.
"""
