"""Every Envoy config shipped under envoy-config/ and examples/ passes
`envoy --mode validate` (which also loads the .wasm and runs the plugin's
on_configure, so a bad plugin JSON fails here too).

Envoy configs are told apart from other YAML (docker-compose, Kubernetes
manifests) by their top-level `static_resources` or `admin` keys. A config
that names the .wasm by a path that does not exist here (the Docker path
/etc/envoy/sticky_canary.wasm) is validated as a copy pointing at the local
build.
"""

from __future__ import annotations

import concurrent.futures

import pytest
import yaml

import testkit

ROOTS = ("envoy-config", "examples")


def envoy_configs() -> list:
    found = []
    for root in ROOTS:
        base = testkit.REPO_ROOT / root
        if not base.is_dir():
            continue
        for path in sorted(list(base.rglob("*.yaml")) + list(base.rglob("*.yml"))):
            if "compose" in path.name:
                continue
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except yaml.YAMLError:
                continue
            if len(docs) == 1 and isinstance(docs[0], dict) and ({"static_resources", "admin"} & docs[0].keys()):
                found.append(path)
    return found


CONFIGS = envoy_configs()


def test_shipped_configs_are_found():
    rel = {str(p.relative_to(testkit.REPO_ROOT)) for p in CONFIGS}
    assert {"envoy-config/envoy-local.yaml", "envoy-config/envoy.yaml"} <= rel, rel


@pytest.fixture(scope="module")
def results(workdir):
    """Validate all configs at once (each run takes ~2 s)."""
    out_dir = workdir / "validate"
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(path):
        config = testkit.load_config(path)
        local = testkit.rewrite_config(config)  # only .wasm paths change
        target = path
        if local != config:
            rel = path.relative_to(testkit.REPO_ROOT)
            target = out_dir / str(rel).replace("/", "__")
            target.write_text(yaml.safe_dump(local, sort_keys=False))
        rc, output = testkit.validate_config(target)
        return rc, output, target

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(zip(CONFIGS, pool.map(one, CONFIGS)))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(testkit.REPO_ROOT)) for p in CONFIGS])
def test_envoy_validates(results, path):
    rc, output, target = results[path]
    assert rc == 0, output[-4000:]
    assert f"configuration '{target}' OK" in output, output[-4000:]


def test_shipped_configs_release_freed_memory():
    """Every shipped Envoy config has the bootstrap's memory_allocator_manager
    (README, "Performance and size": V8 frees most of what compiling the
    module took, and tcmalloc keeps it without this)."""
    missing = []
    for path in CONFIGS:
        mam = testkit.load_config(path).get("memory_allocator_manager") or {}
        if not (int(mam.get("bytes_to_release", 0)) > 0 and mam.get("memory_release_interval")):
            missing.append(str(path.relative_to(testkit.REPO_ROOT)))
    assert not missing, f"no memory_allocator_manager in {missing}"
