"""Fixtures of the Envoy Gateway suites.

- ``eg_ready`` (session): the prerequisites of the standalone tests (the
  pip Envoy and the built .wasm, and private network namespaces: root or
  unprivileged user namespaces); a missing one fails the test in one line.
  Prints the Envoy Gateway and Envoy versions once per session.
- ``say(title, lines)``: a function that writes to the terminal, past
  pytest's capture (the versions, and what each stack substituted in the
  shipped manifests).
"""

from __future__ import annotations

import pytest

import testkit


@pytest.fixture(scope="session")
def say(request):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def write(title: str, lines=()) -> None:
        text = "\n".join([title, *(f"    {line}" for line in lines)])
        print(text)  # also in the captured output of a failed test
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(text)

    return write


@pytest.fixture(scope="session")
def eg_ready(say):
    testkit.require_envoy_and_wasm()
    from testkit.envoy_gateway import versions
    from testkit.netns import namespace_problem

    problem = namespace_problem("the Envoy Gateway tests")
    if problem:
        pytest.fail(problem, pytrace=False)
    v = versions()
    say("Envoy Gateway standalone tests:", [f"Envoy Gateway: {v['envoy-gateway']}", f"Envoy: {v['envoy']}"])
    return v
