"""Wire stage: compiling generated functions so that tracebacks and debuggers show their source.

Two generators write Python source for speed: ``sparse.py`` (each model's ``__init__``) and
``codec.py`` (each model's unstructure functions). Both compile through
:func:`compile_function`, which registers the source with :mod:`linecache` under a file name
that says what was generated, so a traceback through generated code prints its lines and
``pdb`` can list and step through them. Entries have no modification time, so
:func:`linecache.checkcache` keeps them.

The source is always built from the package's own model classes (field names, types,
defaults), never from user data.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["compile_function", "generated_filename"]


def generated_filename(what: str, cls: type) -> str:
    """The pseudo file name of code generated for ``cls``: ``<mparticle_feed WHAT module.Class>``."""
    return f"<mparticle_feed {what} {cls.__module__}.{cls.__qualname__}>"


def _register(filename: str, source: str) -> str:
    """Put ``source`` in the line cache under ``filename``, or a numbered variant if taken.

    A second class of the same name (a test's local class, a reloaded module) or a second
    function for one class (codec compiles one per shape) must not overwrite the lines a
    live function's traceback would show.
    """
    entry = (len(source), None, source.splitlines(keepends=True), filename)
    candidate = filename
    number = 1
    while linecache.cache.setdefault(candidate, entry) != entry:
        number += 1
        candidate = f"{filename[:-1]} #{number}>"
        entry = (entry[0], None, entry[2], candidate)
    return candidate


def compile_function(
    name: str, lines: Sequence[str], namespace: dict[str, Any], *, filename: str
) -> Callable[..., Any]:
    """Compile the ``def name(...)`` written in ``lines`` with ``namespace`` as its globals.

    The function is removed from ``namespace`` and returned; anything else the namespace
    holds (helpers, other generated functions it calls by name) stays for it to use.
    """
    source = "\n".join(lines) + "\n"
    code = compile(source, _register(filename, source), "exec")
    exec(code, namespace)  # noqa: S102 (source written by this package's generators)
    function: Callable[..., Any] = namespace.pop(name)
    return function
