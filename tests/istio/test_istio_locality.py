"""Persistent mode with Istio's locality load balancing, checked by the real
Envoy (`envoy --mode validate`) against the clusters istiod builds.

Envoy rejects a cluster that has both `load_balancing_policy` (what
istio/persistent/envoyfilter.yaml MERGEs in) and
`common_lb_config.locality_weighted_lb_config` or `zone_aware_lb_config`
("load_balancing_policy cannot be combined with partial fields"), and a MERGE
patch cannot remove a field. `istiod_cluster()` re-implements the part of
istiod that decides those fields, as read in Istio's source (1.27 to 1.31):

- pilot/pkg/networking/core/loadbalancer/loadbalancer.go
  `GetEffectiveLbSetting` (1.27: `GetLocalityLbSetting`): the
  DestinationRule's zoneAwareLbSetting, else its localityLbSetting
  (`enabled: false` -> no setting at all), else the Service's
  trafficDistribution (PreferClose / PreferSameZone / PreferSameNode: a
  failoverPriority, failover forced), else the mesh's zoneAwareLbSetting,
  else the mesh's localityLbSetting (`enabled: false` -> none);
- `LocalityLBSettings.ApplyToCluster` (1.27: cluster_traffic_policy.go
  `applyLocalityLoadBalancer`): `locality_weighted_lb_config` when the
  istiod env ENABLE_LOCALITY_WEIGHTED_LB_CONFIG is on, or failover is
  enabled (forced, or outlier detection set) and the setting has failover or
  failoverPriority, or the setting has distribute;
- `ZoneAwareLBSettings.ApplyToCluster`: `zone_aware_lb_config` (with
  routing_enabled 0% when the setting says enabled: false);
- cluster_traffic_policy.go: lb_policy RING_HASH / MAGLEV from
  consistentHash, outlier detection, the default circuit breakers.

The mesh default (`localityLbSetting: {enabled: true}`, no failover) sets
neither field; the shipped DestinationRule (`localityLbSetting.enabled:
false`) keeps every other combination valid, except istiod's
ENABLE_LOCALITY_WEIGHTED_LB_CONFIG, which the README says is not supported.
"""

from __future__ import annotations

import concurrent.futures
import copy

import pytest
import yaml

import testkit
from istiod_model import ISTIO_CIRCUIT_BREAKERS, proto_merge
from testkit.manifests import yaml_docs

ISTIO = testkit.REPO_ROOT / "istio"
HOST = "my-app.default.svc.cluster.local"
PARTIAL = "load_balancing_policy cannot be combined with partial fields"

MESH_DEFAULT = {"enabled": True}
MESH_FAILOVER = {"enabled": True, "failover": [{"from": "us-east1", "to": "us-west1"}]}
MESH_FAILOVER_PRIORITY = {"failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}
MESH_DISTRIBUTE = {"distribute": [{"from": "us-east1/*", "to": {"us-east1/*": 80, "us-west1/*": 20}}]}
PREFER_CLOSE_PRIORITY = ["topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]


def effective_lb_setting(dr_lb: dict, mesh_locality: dict | None, mesh_zone_aware: dict | None, traffic_distribution: str | None):
    """GetEffectiveLbSetting: (kind, setting, force) or None."""
    if dr_lb.get("zoneAwareLbSetting") is not None:
        return ("zone", dr_lb["zoneAwareLbSetting"], False)
    if dr_lb.get("localityLbSetting") is not None:
        s = dr_lb["localityLbSetting"]
        return None if s.get("enabled") is False else ("locality", s, False)
    if traffic_distribution in ("PreferClose", "PreferSameZone"):
        return ("locality", {"enabled": True, "failoverPriority": PREFER_CLOSE_PRIORITY}, True)
    if traffic_distribution == "PreferSameNode":
        return ("locality", {"enabled": True, "failoverPriority": PREFER_CLOSE_PRIORITY + ["topology.istio.io/subzone", "kubernetes.io/hostname"]}, True)
    if mesh_zone_aware is not None:
        return ("zone", mesh_zone_aware, False)
    if mesh_locality is not None:
        return None if mesh_locality.get("enabled") is False else ("locality", mesh_locality, False)
    return None


def istiod_cluster(subset: str, dr: dict, *, mesh_locality=MESH_DEFAULT, mesh_zone_aware=None,
                   traffic_distribution=None, env_locality_weighted=False) -> dict:
    """The gateway's outbound cluster for one subset, as istiod builds it
    (EDS over ADS, as on a real gateway)."""
    policy = dr["spec"]["trafficPolicy"]
    lb = policy.get("loadBalancer", {})
    name = f"outbound|80|{subset}|{HOST}"
    c = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}},
        "connect_timeout": "10s",
        "circuit_breakers": copy.deepcopy(ISTIO_CIRCUIT_BREAKERS),
        "common_lb_config": {},
    }
    od = policy.get("outlierDetection")
    if od:
        c["outlier_detection"] = {"consecutive_5xx": od["consecutive5xxErrors"], "interval": od["interval"],
                                  "base_ejection_time": od["baseEjectionTime"], "max_ejection_percent": od["maxEjectionPercent"],
                                  "enforcing_consecutive_5xx": 100}
    setting = effective_lb_setting(lb, mesh_locality, mesh_zone_aware, traffic_distribution)
    kind, s, force = setting or ("locality", {}, False)
    if kind == "locality":
        failover = force or "outlier_detection" in c
        if env_locality_weighted or (failover and (s.get("failover") or s.get("failoverPriority"))) or s.get("distribute"):
            c["common_lb_config"]["locality_weighted_lb_config"] = {}
    else:
        zone = {"routing_enabled": {"value": 0}} if s.get("enabled") is False else {}
        c["common_lb_config"]["zone_aware_lb_config"] = zone
    ch = lb.get("consistentHash")
    if ch and "maglev" in ch:
        c["lb_policy"] = "MAGLEV"
        c["maglev_lb_config"] = {"table_size": ch["maglev"].get("tableSize", 65537)}
    elif ch:
        c["lb_policy"] = "RING_HASH"
        c["ring_hash_lb_config"] = {"minimum_ring_size": ch.get("ringHash", {}).get("minimumRingSize", 1024)}
    else:
        c["lb_policy"] = "LEAST_REQUEST"
    return c


def patched(cluster: dict) -> dict:
    """The persistent EnvoyFilter's CLUSTER MERGE applied to one cluster."""
    (ef,) = [d for d in yaml_docs(ISTIO / "persistent" / "envoyfilter.yaml") if d["kind"] == "EnvoyFilter"]
    out = copy.deepcopy(cluster)
    for p in ef["spec"]["configPatches"]:
        assert p["applyTo"] == "CLUSTER" and p["patch"]["operation"] == "MERGE"
        assert p["match"]["cluster"]["service"] == HOST
        proto_merge(out, p["patch"]["value"])
    return out


def bootstrap(clusters: list[dict]) -> dict:
    """A gateway bootstrap: the ADS cluster (xds-grpc, as istio-agent's) and
    the patched outbound clusters as static resources."""
    xds = {"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
           "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
               "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
               "explicit_http_config": {"http2_protocol_options": {}}}},
           "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}
    return {
        "node": {"id": "router~10.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local", "cluster": "istio-ingressgateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                             "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {"clusters": [xds] + clusters},
    }


def shipped_dr() -> dict:
    (dr,) = [d for d in yaml_docs(ISTIO / "persistent" / "destinationrule.yaml") if d["kind"] == "DestinationRule"]
    return dr


def dr_without_locality_setting() -> dict:
    dr = copy.deepcopy(shipped_dr())
    del dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]
    return dr


# (id, DestinationRule, istiod inputs, Envoy accepts the patched clusters)
CASES = [
    ("mesh-default", dr_without_locality_setting, {}, True),
    ("mesh-failover", dr_without_locality_setting, {"mesh_locality": MESH_FAILOVER}, False),
    ("mesh-failoverPriority", dr_without_locality_setting, {"mesh_locality": MESH_FAILOVER_PRIORITY}, False),
    ("mesh-distribute", dr_without_locality_setting, {"mesh_locality": MESH_DISTRIBUTE}, False),
    ("service-PreferClose", dr_without_locality_setting, {"traffic_distribution": "PreferClose"}, False),
    ("mesh-zoneAware", dr_without_locality_setting, {"mesh_zone_aware": {}}, False),
    ("shipped/mesh-default", shipped_dr, {}, True),
    ("shipped/mesh-failover", shipped_dr, {"mesh_locality": MESH_FAILOVER}, True),
    ("shipped/mesh-failoverPriority", shipped_dr, {"mesh_locality": MESH_FAILOVER_PRIORITY}, True),
    ("shipped/mesh-distribute", shipped_dr, {"mesh_locality": MESH_DISTRIBUTE}, True),
    ("shipped/service-PreferClose", shipped_dr, {"traffic_distribution": "PreferClose"}, True),
    ("shipped/service-PreferSameNode", shipped_dr, {"traffic_distribution": "PreferSameNode"}, True),
    ("shipped/mesh-zoneAware", shipped_dr, {"mesh_zone_aware": {}}, True),
    ("shipped/mesh-zoneAware-disabled", shipped_dr, {"mesh_zone_aware": {"enabled": False}}, True),
    # not supported (istio/README.md): istiod's env sets the field on every cluster
    ("shipped/ENABLE_LOCALITY_WEIGHTED_LB_CONFIG", shipped_dr, {"env_locality_weighted": True}, False),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("locality")

    def run(case):
        cid, dr, inputs, _ = case
        clusters = [patched(istiod_cluster(s["name"], dr(), **inputs)) for s in shipped_dr()["spec"]["subsets"]]
        path = d / (cid.replace("/", "_") + ".yaml")
        path.write_text(yaml.safe_dump(bootstrap(clusters), sort_keys=False))
        return testkit.validate_config(path)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c[0] for c in CASES], pool.map(run, CASES)))


@pytest.mark.parametrize("cid,dr,inputs,accepted", CASES, ids=[c[0] for c in CASES])
def test_envoy_verdict_on_istiod_clusters(results, cid, dr, inputs, accepted):
    rc, out = results[cid]
    if accepted:
        assert rc == 0, out
    else:
        assert rc != 0 and PARTIAL in out, out


def test_shipped_destinationrule_turns_locality_off_for_this_host_only():
    dr = shipped_dr()
    assert dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"] == {"enabled": False}
    assert "zoneAwareLbSetting" not in dr["spec"]["trafficPolicy"]["loadBalancer"]
    # no subset overrides the top-level policy (a subset's loadBalancer would
    # replace it, locality setting included)
    assert all("trafficPolicy" not in s for s in dr["spec"]["subsets"])


def test_the_model_sets_the_fields_istio_sets():
    """The model is not vacuous: the shapes differ exactly where the source says."""
    bare, shipped = dr_without_locality_setting(), shipped_dr()
    c = istiod_cluster("canary-v1", bare, mesh_locality=MESH_FAILOVER)
    assert c["common_lb_config"] == {"locality_weighted_lb_config": {}} and "outlier_detection" in c
    no_od = copy.deepcopy(bare)
    del no_od["spec"]["trafficPolicy"]["outlierDetection"]
    assert istiod_cluster("canary-v1", no_od, mesh_locality=MESH_FAILOVER)["common_lb_config"] == {}, "failover needs outlier detection"
    assert istiod_cluster("canary-v1", no_od, mesh_locality=MESH_DISTRIBUTE)["common_lb_config"] == {"locality_weighted_lb_config": {}}
    assert istiod_cluster("canary-v1", bare, mesh_zone_aware={"enabled": False})["common_lb_config"] == {"zone_aware_lb_config": {"routing_enabled": {"value": 0}}}
    for inputs in ({"mesh_locality": MESH_FAILOVER}, {"traffic_distribution": "PreferClose"}, {"mesh_zone_aware": {}}):
        assert istiod_cluster("canary-v1", shipped, **inputs)["common_lb_config"] == {}
    assert istiod_cluster("canary-v1", shipped)["lb_policy"] == "RING_HASH"
