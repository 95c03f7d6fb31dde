"""The Manager's REST API (Starlette, served by hypercorn's Trio worker).

Modules: ``_envelope`` (the original's envelope, error codes, request parsing, error
handlers), ``_json`` (records as the original's JSON shapes), ``_auth`` (passwords, JWTs,
API tokens, roles, auditing), ``_users`` (auth, users, tokens and audit routes), and the
API's own modules (nodes, metrics, updates, Prometheus, and ``_app``, which builds the
application). Nothing is re-exported here: importing the package costs nothing.
"""
