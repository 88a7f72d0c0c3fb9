"""The examples of docs/mapping.md run as doctests (sphinx runs them too)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "mapping.md"


def test_mapping_page_examples_run() -> None:
    blocks = re.findall(r"```\{doctest\}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    globs: dict[str, object] = {}
    for index, block in enumerate(blocks):
        test = parser.get_doctest(block, globs, f"mapping.md[{index}]", str(DOC), 0)
        runner.run(test, clear_globs=False)
        globs.update(test.globs)  # blocks of one page share names, as in sphinx's doctest
    assert runner.summarize(verbose=False).failed == 0
