"""Shared by every Python suite under tests/: failing tests get the logs
of the processes they used (Envoy with its config_dump, backends, other
children) attached to their report. The support package itself is
tests/testkit (on the path through pytest.ini's `pythonpath`)."""

from testkit.pytest_plugin import pytest_runtest_makereport  # noqa: F401  (hook: logs on failure)
