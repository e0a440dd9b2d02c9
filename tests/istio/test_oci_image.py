"""`make oci` (istio/oci.py) builds an image Istio can pull.

Checked on the image built from the release .wasm:
- the OCI image layout: oci-layout, index.json, blobs/sha256/<digest> whose
  names are the sha256 of their contents and whose sizes match the
  descriptors;
- the media types (OCI manifest, config and tar+gzip layer) and the config's
  rootfs.diff_ids (sha256 of the uncompressed layer);
- the layer: a tar.gz with exactly one member, plugin.wasm, byte-identical to
  the built filter, root-owned, mtime 0, no file name in the gzip header;
- what Istio's agent does with it (pkg/wasm/imagefetcher.go,
  extractOCIStandardImage): last layer of the OCI layer type, gunzip, the tar
  member whose base name is plugin.wasm, the \\0asm magic;
- the digests printed: plugin.wasm sha256 and the manifest digest, which is
  what WasmPlugin.spec.sha256 pins for an oci:// URL (--pin writes it, and
  the pinned manifest still validates);
- one source of truth: the manifests rendered into dist/ carry the registry
  given and the manifest digest of the image just written (read back from
  the layout, not from what oci.py prints), differ from the committed
  templates only there, leave no placeholder behind, and validate;
- determinism: two builds give identical bytes; the tar holds the same
  layout plus Docker's manifest.json.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import testkit
from testkit import eg_validate
from testkit import istio_validate as iv

REPO_ROOT = Path(__file__).resolve().parents[2]
OCI_PY = REPO_ROOT / "istio" / "oci.py"
WASM = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def run_oci(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(OCI_PY), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=testkit.hang_guard(600))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not WASM.exists():
        pytest.fail(f"missing {WASM}: run `make build` first", pytrace=False)
    out = tmp_path_factory.mktemp("oci") / "layout"
    r = run_oci("--wasm", str(WASM), "--out", str(out), "--dist", str(out.parent / "dist"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    return out, info, WASM.read_bytes()


def blob(layout: Path, digest: str) -> bytes:
    algo, hexd = digest.split(":")
    assert algo == "sha256"
    return (layout / "blobs" / "sha256" / hexd).read_bytes()


def test_layout_files_and_digests(built):
    layout, info, _ = built
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for p in (layout / "blobs" / "sha256").iterdir():
        assert sha(p.read_bytes()) == p.name, f"{p.name} does not hold what its name says"
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == MT_INDEX
    (desc,) = index["manifests"]
    assert desc["mediaType"] == MT_MANIFEST
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == info["tag"]
    m = blob(layout, desc["digest"])
    assert len(m) == desc["size"] and desc["digest"] == info["manifest_digest"]
    manifest = json.loads(m)
    for d in [manifest["config"], *manifest["layers"]]:
        assert len(blob(layout, d["digest"])) == d["size"]
    assert len(list((layout / "blobs" / "sha256").iterdir())) == 3


def test_media_types_and_config(built):
    layout, info, _ = built
    manifest = json.loads(blob(layout, info["manifest_digest"]))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MT_MANIFEST
    assert manifest["config"]["mediaType"] == MT_CONFIG
    assert [l["mediaType"] for l in manifest["layers"]] == [MT_LAYER]
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    layer = blob(layout, manifest["layers"][0]["digest"])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha(gzip.decompress(layer))}"]}


def test_layer_holds_exactly_the_built_filter(built):
    layout, info, wasm = built
    manifest = json.loads(blob(layout, info["manifest_digest"]))
    layer = blob(layout, manifest["layers"][0]["digest"])
    assert layer[:3] == b"\x1f\x8b\x08" and layer[3] & 0x08 == 0, "gzip header names a file"
    assert layer[4:8] == b"\0\0\0\0", "gzip mtime is not 0"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.isreg(), member.mode, member.uid, member.gid, member.mtime) == ("plugin.wasm", True, 0o644, 0, 0, 0)
        data = tar.extractfile(member).read()
    assert data == wasm
    assert info["plugin_wasm_sha256"] == sha(wasm) and info["plugin_wasm_size"] == len(wasm)


def istio_extract(layout: Path, ref: str) -> tuple[bytes, str]:
    """What Istio's agent does after pulling `ref` (pkg/wasm/imagefetcher.go):
    returns (the Wasm binary, the digest it compares WasmPlugin.sha256 with)."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == ref]
    raw = blob(layout, desc["digest"])
    actual_digest = sha(raw)  # img.Digest().Hex
    manifest = json.loads(raw)
    assert manifest.get("mediaType") != DOCKER_MANIFEST  # -> the OCI "compat" path
    layers = manifest["layers"]
    assert len(layers) > 0, "number of layers must be greater than zero"
    last = layers[-1]
    assert last["mediaType"] == MT_LAYER, f"invalid media type {last['mediaType']}"
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(blob(layout, last["digest"])))) as tar:
        for m in tar:
            if Path(m.name).name == "plugin.wasm":
                wasm = tar.extractfile(m).read()
                break
        else:
            raise AssertionError("plugin.wasm not found in the archive")
    assert len(wasm) >= 8 and wasm[:4] == b"\0asm", "fetched Wasm binary is invalid"
    return wasm, actual_digest


def test_istio_would_load_it_and_pin_the_manifest_digest(built, tmp_path):
    layout, info, wasm = built
    got, digest = istio_extract(layout, info["tag"])
    assert got == wasm
    assert f"sha256:{digest}" == info["manifest_digest"]
    # --pin writes that digest into a WasmPlugin and a TrafficExtension,
    # which still validate.
    for rel in ("gateway/wasmplugin.yaml", "trafficextension/trafficextension.yaml"):
        src = REPO_ROOT / "istio" / rel
        copy = tmp_path / src.name
        shutil.copy(src, copy)
        r = run_oci("--wasm", str(WASM), "--out", str(tmp_path / "pin-layout"), "--dist", str(tmp_path / "dist"), "--pin", str(copy), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["pinned"], r.stdout
        text = copy.read_text()
        (doc,) = [d for d in yaml.safe_load_all(text) if d]
        spec = doc["spec"] if doc["kind"] == "WasmPlugin" else doc["spec"]["wasm"]
        assert spec["sha256"] == digest
        assert iv.validate(doc, min_istio=iv.min_istio_of(text)) == []
        # only the sha256 line changed: comments and layout kept
        assert [l for l in text.splitlines() if "sha256:" not in l] == [l for l in src.read_text().splitlines() if "sha256:" not in l]


def test_pin_uses_the_file_digest_for_https_urls(built, tmp_path):
    _, info, _ = built
    f = tmp_path / "wp.yaml"
    f.write_text((REPO_ROOT / "istio" / "gateway" / "wasmplugin.yaml").read_text().replace(
        "url: oci://REGISTRY.example/REPLACE-ME/sticky-canary:0.1.0", "url: https://example.com/sticky_canary.wasm"))
    r = run_oci("--wasm", str(WASM), "--out", str(tmp_path / "l"), "--dist", str(tmp_path / "dist"), "--pin", str(f), "--json")
    assert r.returncode == 0, r.stderr
    (doc,) = [d for d in yaml.safe_load_all(f.read_text()) if d]
    assert doc["spec"]["sha256"] == info["plugin_wasm_sha256"]


def test_build_is_reproducible_and_tar_matches_layout(built, tmp_path):
    layout, info, _ = built
    again = tmp_path / "again"
    r = run_oci("--wasm", str(WASM), "--out", str(again), "--dist", str(tmp_path / "dist"), "--json")
    assert r.returncode == 0, r.stderr
    info2 = json.loads(r.stdout)
    for k in ("plugin_wasm_sha256", "layer_digest", "config_digest", "manifest_digest"):
        assert info[k] == info2[k], k
    tar1 = Path(info["tar"]).read_bytes()
    assert tar1 == Path(info2["tar"]).read_bytes(), "the tar is not reproducible"
    with tarfile.open(fileobj=io.BytesIO(tar1)) as tar:
        names = [m.name for m in tar.getmembers() if m.isreg()]
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        for name in names:
            data = tar.extractfile(name).read()
            if name.startswith("blobs/"):
                assert data == (layout / name).read_bytes()
        assert tar.extractfile("index.json").read() == (layout / "index.json").read_bytes()
        docker = json.loads(tar.extractfile("manifest.json").read())
        manifest = json.loads(blob(layout, info["manifest_digest"]))
        assert docker == [{
            "Config": f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}",
            "RepoTags": [f"sticky-canary:{info['tag']}"],
            "Layers": [f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"],
        }]


def test_default_arguments_work_from_the_repo_root():
    """What `make oci` runs: no arguments, from the repository root."""
    r = run_oci("--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert Path(info["layout"]) == REPO_ROOT / "target" / "oci"
    assert Path(info["tar"]) == REPO_ROOT / "target" / "oci.tar"
    assert info["plugin_wasm_sha256"] == sha(WASM.read_bytes())
    human = run_oci()
    assert human.returncode == 0 and info["manifest_digest"].split(":")[1] in human.stdout


def test_rejects_a_file_that_is_not_wasm(tmp_path):
    bogus = tmp_path / "x.wasm"
    bogus.write_bytes(b"not wasm at all")
    r = run_oci("--wasm", str(bogus), "--out", str(tmp_path / "o"), "--dist", str(tmp_path / "d"))
    assert r.returncode != 0 and "not a WebAssembly module" in r.stderr + r.stdout
    r = run_oci("--wasm", str(tmp_path / "missing.wasm"), "--out", str(tmp_path / "o"), "--dist", str(tmp_path / "d"))
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_dockerfile_builds_the_same_image_shape():
    lines = [l.strip() for l in (REPO_ROOT / "istio" / "Dockerfile").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == ["FROM scratch", "COPY plugin.wasm ./"]


REGISTRY = "registry.test:5000/team"
PLACEHOLDER_REGISTRY = "REGISTRY.example/REPLACE-ME"
PLACEHOLDER_DIGEST = "0" * 64
TEMPLATE_DIRS = ("istio", "envoy-gateway")


def _image_fields(doc: dict) -> list[tuple[dict, str, str]]:
    """(object, url key, url prefix) of every image reference in a manifest."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "WasmPlugin":
        return [(spec, "url", "oci://")]
    if kind == "TrafficExtension":
        return [(spec["wasm"], "url", "oci://")]
    if kind == "EnvoyExtensionPolicy":
        return [(w["code"]["image"], "url", "") for w in spec.get("wasm", []) if w["code"]["type"] == "Image"]
    return []


def _validate(doc: dict, text: str) -> list[str]:
    if doc["apiVersion"].startswith(("gateway.envoyproxy.io/", "gateway.networking.k8s.io/")):
        return eg_validate.validate(doc)
    return iv.validate(doc, min_istio=iv.min_istio_of(text))


def test_rendered_manifests_carry_the_built_image_digest(tmp_path):
    """`make oci REGISTRY=...`: dist/ is what users apply."""
    layout, dist = tmp_path / "layout", tmp_path / "dist"
    r = run_oci("--wasm", str(WASM), "--out", str(layout), "--dist", str(dist), "--registry", REGISTRY, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    tag = info["tag"]
    # the digest of the image on disk, from the layout itself
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    digest = entry["digest"].split(":")[1]
    assert sha((layout / "blobs" / "sha256" / digest).read_bytes()) == digest
    assert json.loads((dist / "image.json").read_text())["manifest_digest"] == f"sha256:{digest}"

    templates = [f for top in TEMPLATE_DIRS for f in sorted((REPO_ROOT / top).rglob("*.yaml")) if not f.name.startswith("docker-compose")]
    seen = 0
    for src in templates:
        out = dist / src.relative_to(REPO_ROOT)
        assert out.exists(), out
        text = out.read_text()
        assert "REPLACE-ME" not in text and PLACEHOLDER_DIGEST not in text, out
        for want, got in zip(yaml.safe_load_all(src.read_text()), yaml.safe_load_all(text), strict=True):
            if not isinstance(got, dict) or "kind" not in got:
                assert got == want
                continue
            for (obj, key, prefix), (tobj, _, _) in zip(_image_fields(got), _image_fields(want), strict=True):
                assert tobj[key] == f"{prefix}{PLACEHOLDER_REGISTRY}/sticky-canary:{tag}" and tobj["sha256"] == PLACEHOLDER_DIGEST
                assert obj[key] == f"{prefix}{REGISTRY}/sticky-canary:{tag}"
                assert obj["sha256"] == digest
                tobj[key], tobj["sha256"] = obj[key], obj["sha256"]
                seen += 1
            assert got == want, f"{out}: only the image reference and digest may differ"
            assert _validate(got, text) == [], out
    assert seen >= 6  # five Istio plugins and the Envoy Gateway policy


def test_rendering_rejects_a_registry_with_a_scheme(tmp_path):
    r = run_oci("--wasm", str(WASM), "--out", str(tmp_path / "o"), "--dist", str(tmp_path / "d"), "--registry", "oci://ghcr.io/you")
    assert r.returncode != 0 and "without a scheme" in r.stderr
