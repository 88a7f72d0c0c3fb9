"""Stage 2, sources: rows from what a user has (DB-API cursors, ...) as mappings, and the
coercion of driver values into wire-ready values.
"""
