"""The pytest side of testkit, loaded for every suite by tests/conftest.py.

``pytest_runtest_makereport`` (a hook wrapper) attaches to the report of a
failed test the log tails of the processes the test or its function-scoped
fixtures started, and of those its fixtures hold (an Envoy, a Backend, a
BackendSet, or objects with .envoy/.backends/.pods such as the ``stack``
fixture), with Envoy's ``/config_dump`` while it still runs (see
``testkit.process.logs_for_report``).
"""

from __future__ import annotations

import pytest

from .process import logs_for_report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.when == "setup":
        item._testkit_since = call.start
    if rep.failed:
        since = getattr(item, "_testkit_since", call.start)
        used = list(getattr(item, "funcargs", {}).values())
        for title, text in logs_for_report(since, used):
            rep.sections.append((title, text))
