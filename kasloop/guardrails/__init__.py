"""What keeps an agent inside its lines: the gate for each call (``policy``), kasloop's own files no
tool may touch (``protected``), secrets redacted everywhere (``secrets``), the approval channels'
own secrets (``approval_secrets``) and receivers no tool may reach (``receivers``), hard budgets
(``budget``), and the approvals lifecycle a human decides through (``approvals``).

This package file imports nothing, so importing one module does not load the others.
"""
