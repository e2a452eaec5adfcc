"""What no config turns off, below the config itself: kasloop's own files no tool may touch
(``protected``), secrets redacted from every log, table and checkpoint (``secrets``), the approval
channels' own secrets (``approval_secrets``) and the receivers no tool may reach (``receivers``).

This package file imports nothing, so importing one module does not load the others.
"""
