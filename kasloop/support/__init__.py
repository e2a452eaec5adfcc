"""Small helpers every layer may use, with no kasloop imports of their own: atomic file writes
(``atomic_files``), process-wide file locks (``locks``), retry delays (``backoff``) and JSON logs (``logs``).

This package file imports nothing, so importing one module does not load the others.
"""
