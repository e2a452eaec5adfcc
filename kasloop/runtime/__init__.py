"""The runtime: thread sessions (drive, settle, lock, read), the results they return, and the daemon.

``sessions`` opens a home's database and makes a ``session`` per thread under its
stored policy (``thread_policy``); ``result`` is what a command returns and the
exit code it maps to; ``daemon`` keeps every thread moving. ``kasloop.agent.Agent``
is the facade over them. This package file imports nothing, so importing one
module does not load the others.
"""
