"""Configuration: what a config may say (``schema``: ``AgentConfig`` and its parts, validated by
pydantic), reading it from ``kasloop.toml``, environment variables and flags (``loading``), and the
mail server settings the email tools and the email approval channel share (``mail``).

This package file imports nothing, so importing one module does not load the others.
"""
