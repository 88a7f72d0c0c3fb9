"""Sphinx configuration: MyST Markdown pages, autodoc for the API reference, furo theme."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

from sphinx.application import Sphinx

project = "mparticle_feed"
author = "mparticle_feed developers"
copyright = "mparticle_feed developers"
try:
    release = _package_version("mparticle-feed")
except PackageNotFoundError:  # building from a tree that was never installed
    release = "0.0.0+unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
# The engines' dependencies are optional extras the docs session does not install.
autodoc_mock_imports = ["pyspark", "dask", "distributed", "pandas", "pyarrow"]

# Doctests run against the installed package.
doctest_global_setup = "import mparticle_feed as mpf"

# No network while building: references to the stdlib stay plain text.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = "mparticle_feed"


def _show_factory_defaults(  # noqa: PLR0917 (Sphinx passes event arguments by position)
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """attrs writes a factory default as ``NOTHING`` in ``__init__``; show ``<factory>``."""
    if signature is not None:
        signature = signature.replace("=NOTHING", "=<factory>")
    return signature, return_annotation


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-signature", _show_factory_defaults)
