#!/usr/bin/env python3
"""Package the filter as an OCI image that Istio pulls, without Docker.

    python3 istio/oci.py                       # what `make oci` runs
    python3 istio/oci.py --registry ghcr.io/you   # = make oci REGISTRY=ghcr.io/you
    python3 istio/oci.py --wasm target/wasm32-wasip1/release/sticky_canary.wasm --out target/oci
    python3 istio/oci.py --pin my/wasmplugin.yaml   # also write the digest into your own manifests
    python3 istio/oci.py --registry ghcr.io/you --pin out/envoy-gateway.yaml   # = make oci REGISTRY=... PIN=...
                                               # (`sticky-canary migrate` output: registry and digest)
    python3 istio/oci.py --registry ghcr.io/you --push  # = make oci-push REGISTRY=ghcr.io/you

Writes an OCI image layout directory (``oci-layout``, ``index.json``,
``blobs/sha256/...``) and a tar of it next to it (``target/oci.tar``). The
image is what ``FROM scratch`` + ``COPY plugin.wasm ./`` builds (see
istio/Dockerfile), in OCI media types:

- manifest ``application/vnd.oci.image.manifest.v1+json``;
- config ``application/vnd.oci.image.config.v1+json`` (os ``wasip1``,
  architecture ``wasm``, ``rootfs.diff_ids`` = sha256 of the layer tar);
- one layer ``application/vnd.oci.image.layer.v1.tar+gzip``: a tar.gz whose
  only member is ``plugin.wasm``, byte-identical to the built filter.

This is the "compat" Wasm image variant: Istio's agent takes the last layer,
requires exactly that layer media type (or Docker's
``application/vnd.docker.image.rootfs.diff.tar.gzip`` under a Docker
manifest), gunzips it and reads the member named ``plugin.wasm``. It was
chosen over the Wasm OCI artifact variant
(``application/vnd.module.wasm.content.layer.v1+wasm``) because it is a
plain container image: every registry, ``crane``, ``skopeo``, ``oras`` and
``docker`` handle it, and it is byte-for-byte the image the Dockerfile
describes.

The build is deterministic: fixed mtimes (0, or ``SOURCE_DATE_EPOCH``),
uid/gid 0, sorted tar members, gzip mtime 0 and no file name, canonical
JSON. The same ``.wasm`` gives the same digests (with the same zlib).

What ``WasmPlugin.spec.sha256`` is compared with depends on the URL scheme
(Istio pkg/wasm/cache.go): for ``oci://`` it is the digest of the image
**manifest** (pkg/wasm/imagefetcher.go: ``img.Digest()`` after resolving
an index to its linux/amd64 image); for ``http(s)://`` it is the sha256 of
the downloaded file, i.e. of ``plugin.wasm``. Envoy Gateway's
``code.image.sha256`` is the same manifest digest (its internal/wasm is
Istio's code). Both are printed.

One source of truth for the manifests: the files under istio/ and
envoy-gateway/ are templates with a placeholder registry
(``REGISTRY.example/REPLACE-ME``) and digest (64 zeros). Every run renders
them into ``dist/`` (``--dist``) with ``--registry`` and the manifest digest
of the image just built, and writes ``dist/image.json`` (the digests). Apply
the files from ``dist/`` after pushing the image to that registry.
``--pin`` writes the right digest into the ``sha256:`` line of each
WasmPlugin / TrafficExtension you name (your own copies).

``--push`` then copies the layout to the registry with ORAS (``oras cp
--from-oci-layout``: the manifest goes byte for byte, so the registry keeps
the digest rendered into ``dist/``), using ORAS's credentials (``oras
login``, or Docker's ``~/.docker/config.json``) over HTTPS, or plain HTTP
for a registry on the machine's loopback (``localhost``, ``127.x.x.x``,
``[::1]``), and checks that the registry answered that digest.

Standard library only (ORAS for --push).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WASM = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "sticky_canary.wasm"
DEFAULT_OUT = REPO_ROOT / "target" / "oci"
DEFAULT_DIST = REPO_ROOT / "dist"
# The templates rendered into dist/ (directories under the repository root).
TEMPLATE_DIRS = ("istio", "envoy-gateway")
PLACEHOLDER_REGISTRY = "REGISTRY.example/REPLACE-ME"
PLACEHOLDER_DIGEST = "0" * 64
# An image reference in a template: REGISTRY.example/REPLACE-ME/<name>:<tag>
PLACEHOLDER_REF = re.compile(re.escape(PLACEHOLDER_REGISTRY) + r"/(?P<name>[a-z0-9][a-z0-9._-]*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)")
PLACEHOLDER_SHA = re.compile(r"""(?m)^(?P<indent>[ \t]*)sha256:[ \t]*(?P<q>["']?)""" + PLACEHOLDER_DIGEST + r"(?P=q)(?P<rest>[ \t]*(#.*)?)$")

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_NAME = "plugin.wasm"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cargo_version() -> str:
    try:
        text = (REPO_ROOT / "Cargo.toml").read_text()
    except OSError:
        return "latest"
    m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else "latest"


def layer_tar(wasm: bytes, mtime: int) -> bytes:
    """An uncompressed tar with one member, plugin.wasm, owned by root, 0644."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(WASM_NAME)
        info.size = len(wasm)
        info.mtime = mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0: nothing of the build machine in the header.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def rfc3339(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(wasm: bytes, *, name: str, tag: str, mtime: int) -> dict:
    """All blobs and descriptors of the image, in memory."""
    if wasm[:4] != b"\0asm":
        raise SystemExit("error: the input is not a WebAssembly module (no \\0asm magic)")
    tar = layer_tar(wasm, mtime)
    layer = gzip_bytes(tar)
    created = rfc3339(mtime)
    config = canonical_json({
        "architecture": "wasm",
        "os": "wasip1",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
        "history": [{"created": created, "created_by": f"COPY {WASM_NAME} ./ (istio/oci.py)"}],
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": f"sha256:{sha256(config)}", "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": f"sha256:{sha256(layer)}", "size": len(layer)}],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.description": "sticky-canary proxy-wasm filter (Envoy / Istio WasmPlugin)",
        },
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": f"sha256:{sha256(manifest)}",
            "size": len(manifest),
            "annotations": {
                # skopeo / oras / crane: `<layout>:<tag>`
                "org.opencontainers.image.ref.name": tag,
                # docker load / containerd: the image name to tag it with
                "io.containerd.image.name": f"{name}:{tag}",
            },
        }],
    })
    return {
        "wasm_sha256": sha256(wasm),
        "wasm_size": len(wasm),
        "tar_sha256": sha256(tar),
        "layer": layer,
        "config": config,
        "manifest": manifest,
        "index": index,
        "name": name,
        "tag": tag,
    }


def blobs(img: dict) -> dict[str, bytes]:
    return {sha256(b): b for b in (img["layer"], img["config"], img["manifest"])}


def write_layout(img: dict, out: Path) -> None:
    """Write the OCI image layout directory, replacing a previous one."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("blobs", "index.json", "oci-layout"):
        p = out / stale
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (out / "blobs" / "sha256").mkdir(parents=True)
    for digest, data in blobs(img).items():
        (out / "blobs" / "sha256" / digest).write_bytes(data)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(img["index"])


def write_tar(img: dict, path: Path, mtime: int) -> None:
    """The layout as one tar (an "oci-archive"), plus Docker's manifest.json
    so that `docker load` takes it too. Sorted members, fixed metadata."""
    files: dict[str, bytes] = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": img["index"],
        "manifest.json": canonical_json([{
            "Config": f"blobs/sha256/{sha256(img['config'])}",
            "RepoTags": [f"{img['name']}:{img['tag']}"],
            "Layers": [f"blobs/sha256/{sha256(img['layer'])}"],
        }]),
    }
    for digest, data in blobs(img).items():
        files[f"blobs/sha256/{digest}"] = data
    dirs = ["blobs", "blobs/sha256"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    os.replace(tmp, path)


SHA_LINE = re.compile(r"^(?P<indent>[ \t]*)sha256:[ \t]*(?P<value>[\"']?[0-9a-fA-F]*[\"']?)(?P<rest>[ \t]*(#.*)?)$", re.M)
URL_LINE = re.compile(r"^[ \t]*url:[ \t]*[\"']?(?P<url>[^\"'\s#]+)", re.M)
KIND_LINE = re.compile(r"^kind:[ \t]*(WasmPlugin|TrafficExtension|EnvoyExtensionPolicy)[ \t]*$", re.M)


def pin(path: Path, img: dict, registry: str = PLACEHOLDER_REGISTRY) -> list[str]:
    """Rewrite the sha256 line of every WasmPlugin / TrafficExtension /
    EnvoyExtensionPolicy in a YAML file (`sticky-canary migrate` output, or
    your own copies): the manifest digest for oci:// URLs and Envoy
    Gateway's scheme-less image references, the plugin.wasm sha256 for
    http(s):// URLs; a placeholder registry (REGISTRY.example/REPLACE-ME)
    becomes `registry`. Comments and layout are kept, the REPLACE-ME notes
    on the lines changed go. Returns what changed."""
    text = path.read_text()
    docs = re.split(r"(?m)^(---[ \t]*\n)", text)
    changes = []
    for i, doc in enumerate(docs):
        kind = KIND_LINE.search(doc)
        if not kind:
            continue
        if registry != PLACEHOLDER_REGISTRY:
            doc = PLACEHOLDER_REF.sub(lambda m: f"{registry}/{m.group('name')}:{m.group('tag')}", doc)
            doc = re.sub(r"(?m)^([ \t]*url:[^#\n]*?)[ \t]+# REPLACE-ME:.*$", r"\1", doc)
            docs[i] = doc
        url = URL_LINE.search(doc)
        if not url:
            continue
        scheme = url.group("url").split("://", 1)[0] if "://" in url.group("url") else None
        if scheme == "oci" or (scheme is None and kind.group(1) == "EnvoyExtensionPolicy"):
            value = sha256(img["manifest"])
        elif scheme in ("http", "https"):
            value = img["wasm_sha256"]
        else:
            continue  # file://: Istio does not check it
        rest = lambda m: re.sub(r"[ \t]*# REPLACE-ME:.*$", "", m.group("rest"))  # noqa: E731
        new, n = SHA_LINE.subn(lambda m: f"{m.group('indent')}sha256: {value}{rest(m)}", doc, count=1)
        if n:
            docs[i] = new
            changes.append(f"{path}: {url.group('url')} -> sha256 {value}")
    path.write_text("".join(docs))
    return changes


def render(img: dict, registry: str, dist: Path) -> list[Path]:
    """Render every YAML template under TEMPLATE_DIRS into dist/ (same
    relative paths): image references get `registry` and the built tag,
    placeholder sha256 lines the manifest digest (with the placeholder's
    comment dropped). Other bytes are kept. Returns the files written."""
    digest = sha256(img["manifest"])
    written = []
    for top in TEMPLATE_DIRS:
        target = dist / top
        if target.is_dir():
            shutil.rmtree(target)
        src_top = REPO_ROOT / top
        if not src_top.is_dir():
            continue
        for src in sorted(src_top.rglob("*.yaml")):
            if src.name.startswith("docker-compose"):
                continue
            text = src.read_text()
            text = PLACEHOLDER_REF.sub(lambda m: f"{registry}/{m.group('name')}:{img['tag']}", text)
            text = PLACEHOLDER_SHA.sub(lambda m: f"{m.group('indent')}sha256: {m.group('q')}{digest}{m.group('q')}", text)
            # the "REPLACE-ME" comments describe the placeholders just replaced
            text = re.sub(r"(?m)[ \t]+# REPLACE-ME:.*$", "", text)
            out = dist / src.relative_to(REPO_ROOT)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            written.append(out)
    return written


# A registry on this machine's loopback: pushed to over plain HTTP (Envoy
# Gateway's and Istio's fetchers pick plain HTTP for these by themselves).
LOOPBACK_REGISTRY = re.compile(r"(localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]+)?")


def find_oras(given: str | None) -> str:
    """ORAS: --oras, else the pinned one scripts/setup.sh installs, else PATH."""
    if given:
        return given
    pinned = REPO_ROOT / ".tools" / "bin" / "oras"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("oras")
    if not found:
        raise SystemExit("error: oras not found: run scripts/setup.sh oci (make oci-push does), or give --oras PATH")
    return found


def push(layout: Path, tag: str, ref: str, manifest_digest: str, oras: str) -> dict:
    """Copy the image `tag` of the layout to `ref` with ORAS; fail unless the
    registry answers `manifest_digest` (what dist/ was rendered with)."""
    argv = [oras, "cp", "--from-oci-layout", f"{layout}:{tag}", ref]
    if LOOPBACK_REGISTRY.fullmatch(ref.split("/", 1)[0]):
        argv.append("--to-plain-http")
    r = subprocess.run(argv, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} failed ({r.returncode}):\n{out}")
    m = re.search(r"Digest: (sha256:[0-9a-f]{64})", out)
    if not m or m.group(1) != manifest_digest:
        raise SystemExit(f"error: the registry answered {m.group(1) if m else 'no digest'} for {ref}, "
                         f"not the rendered {manifest_digest}:\n{out}")
    return {"ref": ref, "digest": m.group(1), "command": " ".join(argv)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help=f"the built filter (default {DEFAULT_WASM.relative_to(REPO_ROOT)})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="OCI image layout directory to write; the tar goes to OUT.tar (default target/oci)")
    ap.add_argument("--name", default="sticky-canary", help="image name for docker load (default sticky-canary)")
    ap.add_argument("--tag", default=None, help="tag (default: the Cargo.toml version)")
    ap.add_argument("--pin", type=Path, nargs="*", default=[], metavar="YAML", help="also write the digest (and --registry) into these WasmPlugin / TrafficExtension / EnvoyExtensionPolicy manifests, e.g. `sticky-canary migrate` output")
    ap.add_argument("--registry", default=PLACEHOLDER_REGISTRY, help="registry/path the image is pushed to, written into the rendered manifests (default: the placeholder)")
    ap.add_argument("--dist", type=Path, default=DEFAULT_DIST, help="where to render the manifests of istio/ and envoy-gateway/ (default dist/)")
    ap.add_argument("--json", action="store_true", help="print the digests as JSON")
    ap.add_argument("--push", action="store_true", help="push the image to --registry with ORAS (plain HTTP for a loopback registry)")
    ap.add_argument("--oras", default=None, help="the oras binary for --push (default: .tools/bin/oras, else PATH)")
    args = ap.parse_args(argv)

    tag = args.tag or cargo_version()
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        ap.error(f"not a valid OCI tag: {tag!r}")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    try:
        wasm = args.wasm.read_bytes()
    except OSError as e:
        print(f"error: cannot read {args.wasm}: {e.strerror} (build it: cargo build --release --target wasm32-wasip1)", file=sys.stderr)
        return 1
    img = build(wasm, name=args.name, tag=tag, mtime=mtime)
    out = args.out
    write_layout(img, out)
    tar_path = out.parent / (out.name + ".tar")
    write_tar(img, tar_path, mtime)
    registry = args.registry.rstrip("/")
    if registry != PLACEHOLDER_REGISTRY and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.:-]*(/[a-z0-9][a-z0-9._/-]*)?", registry):
        ap.error(f"--registry wants host[:port][/path] without a scheme, got {args.registry!r}")
    changes = []
    for p in args.pin:
        changes += pin(p, img, registry)
    rendered = render(img, registry, args.dist)

    info = {
        "layout": str(out),
        "tar": str(tar_path),
        "tag": tag,
        "plugin_wasm_sha256": img["wasm_sha256"],
        "plugin_wasm_size": img["wasm_size"],
        "layer_digest": f"sha256:{sha256(img['layer'])}",
        "config_digest": f"sha256:{sha256(img['config'])}",
        "manifest_digest": f"sha256:{sha256(img['manifest'])}",
        "pinned": changes,
        "registry": registry,
        "image": f"{registry}/{args.name}:{tag}",
        "dist": str(args.dist),
        "rendered": [str(p) for p in rendered],
    }
    if args.push:
        if registry == PLACEHOLDER_REGISTRY:
            ap.error("--push needs --registry (make oci-push REGISTRY=ghcr.io/you)")
        info["pushed"] = push(out, tag, info["image"], info["manifest_digest"], find_oras(args.oras))
    args.dist.mkdir(parents=True, exist_ok=True)
    (args.dist / "image.json").write_text(json.dumps({k: info[k] for k in (
        "image", "tag", "manifest_digest", "plugin_wasm_sha256", "layer_digest", "config_digest")}, indent=2) + "\n")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"OCI image layout   {out}  (tar: {tar_path})")
    print(f"tag                {tag}")
    print(f"plugin.wasm        sha256 {img['wasm_sha256']}  ({img['wasm_size']} bytes)")
    print(f"layer (tar+gzip)   {info['layer_digest']}")
    print(f"manifest digest    {info['manifest_digest']}")
    print()
    print("WasmPlugin spec.sha256 (Istio compares it with):")
    print(f"  url: oci://REGISTRY/{args.name}:{tag}    ->  sha256: {sha256(img['manifest'])}   (the manifest digest)")
    print(f"  url: https://HOST/plugin.wasm        ->  sha256: {img['wasm_sha256']}   (the file itself)")
    print()
    print(f"Manifests rendered into {args.dist}/ ({len(rendered)} files) with {info['image']}")
    print(f"and sha256 {sha256(img['manifest'])}; digests in {args.dist / 'image.json'}.")
    if registry == PLACEHOLDER_REGISTRY:
        print(f"  (registry is the placeholder {PLACEHOLDER_REGISTRY}: run  make oci REGISTRY=ghcr.io/you)")
    print()
    if "pushed" in info:
        print(f"Pushed {info['image']} (the registry answered {info['pushed']['digest']}); apply the manifests from dist/.")
    else:
        print("Push (no Docker needed), then apply the manifests from dist/:")
        print(f"  make oci-push REGISTRY={registry}      (ORAS, installed into .tools/bin by scripts/setup.sh oci)")
        print(f"  crane push {out} {info['image']}")
        print(f"  skopeo copy oci:{out}:{tag} docker://{info['image']}")
        print(f"  oras cp --from-oci-layout {out}:{tag} {info['image']}")
    for c in changes:
        print(f"pinned {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
