"""Generated code (``mparticle_feed._wire.codegen``) is as debuggable as written code."""

from __future__ import annotations

import ast
import inspect
import io
import linecache
import pdb
import traceback
from typing import Any

import pytest

import mparticle_feed as mpf
from mparticle_feed._wire import codec, codegen, sparse, unstructure


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_a_traceback_through_a_generated_init_shows_its_source() -> None:
    with pytest.raises(mpf.ModelError) as caught:
        mpf.CustomEvent(event_name="signup", custom_event_type="not a type")
    text = _formatted(caught.value)
    frame = 'File "<mparticle_feed sparse __init__ mparticle_feed._wire.models.CustomEvent>"'
    assert frame in text
    after = text.split(frame, 1)[1].splitlines()
    # The line under the frame is the generated statement that called the converter.
    assert "_convert_custom_event_type(custom_event_type)" in after[1]


def test_pdb_steps_into_a_generated_init_and_lists_it() -> None:
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("list\ncontinue\n"), stdout=out, nosigint=True)
    debugger.use_rawinput = False
    event = debugger.runcall(mpf.CustomEvent, event_name="signup", custom_event_type="other")
    assert event.event_name == "signup"
    shown = out.getvalue()
    assert "CustomEvent>" in shown  # pdb stopped inside the generated __init__
    # The current line's source: the body opens with the try that names a failing field.
    assert "-> try:" in shown
    assert "_set(self, 'event_name'" in shown
    assert "if source_message_id is not None:" in shown  # and the lines ``list`` shows


def test_generated_unstructure_functions_are_in_the_line_cache() -> None:
    mpf.to_dict(mpf.Batch(events=[mpf.CustomEvent(event_name="a", custom_event_type="other")]))
    names = [
        name for name in linecache.cache if name.startswith("<mparticle_feed deep unstructure")
    ]
    assert any(name.endswith("mparticle_feed._wire.models.CustomEvent>") for name in names)
    assert all(linecache.getline(name, 1).startswith("def ") for name in names)


def test_entries_survive_checkcache_and_never_overwrite_each_other() -> None:
    namespace: dict[str, Any] = {}
    filename = "<mparticle_feed test twice>"
    first = codegen.compile_function(
        "f", ["def f():", "    raise KeyError('first')"], namespace, filename=filename
    )
    second = codegen.compile_function(
        "f", ["def f():", "    raise KeyError('second')"], namespace, filename=filename
    )
    linecache.checkcache()
    for function, word in ((first, "first"), (second, "second")):
        with pytest.raises(KeyError) as caught:
            function()
        assert f"raise KeyError('{word}')" in _formatted(caught.value)
    assert first.__code__.co_filename != second.__code__.co_filename
    # The same source under the same name reuses the entry rather than adding one.
    again = codegen.compile_function(
        "f", ["def f():", "    raise KeyError('first')"], namespace, filename=filename
    )
    assert again.__code__.co_filename == first.__code__.co_filename
    assert "f" not in namespace


_MUTABLE_DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


@pytest.mark.parametrize("module", [codegen, sparse, unstructure, codec], ids=lambda m: m.__name__)
def test_generators_keep_no_mutable_module_globals(module: Any) -> None:
    # Per-class state lives on the class, per-converter hints on the converter, and the
    # codec's tables inside the compiler that owns them.
    tree = ast.parse(inspect.getsource(module))
    made = []
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if ast.unparse(node).startswith("__all__"):
            continue
        if isinstance(value, _MUTABLE_DISPLAYS) or (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in {"dict", "list", "set", "defaultdict"}
        ):
            made.append(ast.unparse(node)[:60])
    assert made == []


def test_a_sparse_layout_lives_on_its_class() -> None:
    shape = sparse.layout(mpf.UserAttributeChangeEvent)
    assert {"new", "old", "user_attribute_name"} <= shape.always
    assert "new" not in shape.optional
    assert shape.set_fields(0) == []
    assert shape.set_fields(1) == [shape.optional[0]]
    # A subclass's layout is its own, not inherited.
    assert sparse.layout(mpf.CustomEvent) != sparse.layout(mpf.ScreenViewEvent)
