"""Developer tasks. `python3 -m pip install nox && python3 -m nox` runs every check CI runs."""

from __future__ import annotations

import nox

# `nox` alone is what CI runs: style, types, the whole test suite (examples included), the docs,
# and the Spark and Dask runs (their own session: the engines stay out of the other venvs).
nox.options.sessions = ["lint", "mypy", "tests", "docs", "distributed"]
nox.options.reuse_existing_virtualenvs = True

PACKAGE = "mparticle_feed"


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package as users get it (not editable) and run the whole suite."""
    session.install(".[test]")
    # tests/distributed needs the engines' extras: the distributed session runs it.
    session.run("pytest", "-p", "no:cacheprovider", "--ignore=tests/distributed", *session.posargs)


@nox.session
def distributed(session: nox.Session) -> None:
    """Spark (local[2], needs Java 17+) and a Dask LocalCluster against the loopback fake."""
    session.install(".[test,spark,dask]", "pytest-timeout>=2.3")
    # A hung JVM or cluster fails its test after 5 minutes instead of holding the job.
    session.run(
        "pytest", "-p", "no:cacheprovider", "--timeout=300", "tests/distributed", *session.posargs
    )


@nox.session
def reliability(session: nox.Session) -> None:
    """Run the fault-injection suite and print its scorecard."""
    session.install(".[test]")
    session.run("pytest", "-p", "no:cacheprovider", "tests/reliability", *session.posargs)
    session.run("python", "tests/reliability/print_scorecard.py")


@nox.session
def mypy(session: nox.Session) -> None:
    session.install(".[test,typing]")
    session.run("mypy", "--strict", PACKAGE)
    session.run("mypy", "--strict", "tests/typing")


@nox.session
def lint(session: nox.Session) -> None:
    session.install(".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors, then run their doctests."""
    session.install(".[docs,test]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session
def examples(session: nox.Session) -> None:
    """Run every script in examples/ against the loopback fake."""
    session.install(".[test]")
    session.run("pytest", "-p", "no:cacheprovider", "tests/test_examples.py")


@nox.session
def demo(session: nox.Session) -> None:
    """The embedded default: a SQLite shop synced to the loopback fake of the Events API."""
    session.install(".")
    session.run("mparticle-feed", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory figures, side by side with the official SDK, in one run."""
    # spark: section (o), the shared budget of a 4-task Spark run (skipped without Java).
    session.install(".[bench,dataplans,spark]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
