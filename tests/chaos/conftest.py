"""Chaos options and reporting.

``--chaos-duration SECONDS`` sets how long each scenario injects faults
(default: a few seconds, so that ``make test`` stays quick; ``make chaos
DURATION=600`` runs each scenario for ten minutes). This file is an initial
conftest when pytest is given ``tests/chaos`` (or ``tests``, via
``testpaths``) as argument, so the option is registered before the command
line is parsed. The tables of every scenario are printed in the terminal
summary.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.harness import REPORTS

DEFAULT_DURATION = 3.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-duration",
        type=float,
        default=DEFAULT_DURATION,
        help=f"seconds of fault injection per chaos scenario (default {DEFAULT_DURATION:g})",
    )


def chaos_duration(config: pytest.Config) -> float:
    """The configured duration (the default if the option was not registered in time)."""
    try:
        value = config.getoption("--chaos-duration")
    except ValueError:
        value = None
    return float(value) if value is not None else DEFAULT_DURATION


@pytest.fixture
def duration(request: pytest.FixtureRequest) -> float:
    """Seconds of fault injection for this scenario."""
    return chaos_duration(request.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A long run must not hit the suite-wide per-test timeout (pyproject: 300 s).
    timeout = 300 + 3 * chaos_duration(config)
    for item in items:
        if "tests/chaos/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(timeout))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("chaos scenarios")
        for text in REPORTS:
            terminalreporter.write_line(text)
