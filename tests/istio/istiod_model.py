"""What the Istio tests reproduce of istiod's output (test_istio_envoy.py,
test_istio_locality.py): the circuit breakers istiod puts on every outbound
cluster, and protobuf MERGE as an EnvoyFilter applies it. Helpers only:
pytest collects no tests here."""

from __future__ import annotations

import copy

# istiod's thresholds on every outbound cluster (getDefaultCircuitBreakerThresholds):
# no retry overflow unless a DestinationRule's connectionPool lowers max_retries.
ISTIO_CIRCUIT_BREAKERS = {"thresholds": [{"max_connections": 4294967295, "max_pending_requests": 4294967295,
                                          "max_requests": 4294967295, "max_retries": 4294967295, "track_remaining": True}]}


def proto_merge(base: dict, patch: dict) -> None:
    """Protobuf MERGE as Istio's EnvoyFilter applies it: messages merged
    field by field, repeated fields appended, scalars replaced."""
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            proto_merge(base[k], v)
        elif isinstance(v, list) and isinstance(base.get(k), list):
            base[k] = base[k] + copy.deepcopy(v)
        else:
            base[k] = copy.deepcopy(v)
