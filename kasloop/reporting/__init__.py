"""What people read about a thread: the HTML report (``report``, built from ``timeline`` with ``html``) and the
notebook helpers (``notebook``).

This package file imports nothing, so importing one module does not load the others.
"""
