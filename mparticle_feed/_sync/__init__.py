"""Stage 5, sync: the incremental state, row statuses, ``plan``/``sync``/``send_plan``, their
reports and plan files. It composes the earlier stages; nothing imports it but the top level
and the CLI.
"""
