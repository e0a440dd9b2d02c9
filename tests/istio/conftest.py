"""tests/istio: the summary of the real Istio run (test_istio_real.py) at
the end of the session: the Istio version, what was substituted in the
shipped manifests, and the measured figures."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter):
    support = sys.modules.get("istio_real_support")
    if support is not None and support.SUMMARY:
        terminalreporter.section("Istio for real (tests/istio/test_istio_real.py)")
        for line in support.SUMMARY:
            terminalreporter.write_line(line)
        if support.STARTS:
            terminalreporter.write_line(
                "start-up per stack (informative, this machine): " + "; ".join(
                    f"{name}: istiod {a:.1f} s, gateway LIVE {b:.1f} s" for name, a, b in support.STARTS))
