"""Chat models: resolving a spec into a model and fallback chain (``chat``), the deterministic
scripted model for tests (``scripted``), and the embedded local model: building llama.cpp and
fetching the weights (``local_install``), running its server (``local_server``).

This package file imports nothing, so importing one module does not load the others.
"""
