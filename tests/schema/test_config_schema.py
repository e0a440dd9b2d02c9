"""config.schema.json stays in step with the filter (src/config.rs and
src/compile.rs).

- The schema is a valid draft 2020-12 schema; every key of every Raw* struct
  in src/config.rs is in it (and nothing else), every key has a
  description, and the defaults it shows are the filter's defaults.
- Every example plugin config in the repository validates (good/, the Envoy
  configs, the Istio pluginConfig blocks); every config in bad/ is rejected
  (the filter rejects them too: tests/schema_configs.rs and
  test_schema_envoy.py); every config in filter-only/ is accepted by the
  schema (only the filter can reject it); every config in stricter/ is
  rejected by the schema (the filter accepts it).
- check-jsonschema, the CI command documented in istio/README.md, gives the
  same answers from the command line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import testkit
from schema_support import REPO_ROOT, SCHEMA_PATH, example_configs, json_files, load_schema, rel

SCHEMA = load_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
CONFIG_RS = (REPO_ROOT / "src" / "config.rs").read_text()
# The compiler and the compiled model (defaults live in src/policy.rs).
COMPILE_RS = "\n".join(p.read_text() for p in sorted((REPO_ROOT / "src" / "compile").glob("*.rs"))) + (REPO_ROOT / "src" / "policy.rs").read_text()


def errors(instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in VALIDATOR.iter_errors(instance)]


def load(text: str):
    # The filter reads an empty configuration as {}.
    return json.loads(text.strip() or "{}")


# ---------------------------------------------------------------------------
# The schema itself


def test_schema_is_valid_draft_2020_12():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _rust_structs() -> dict[str, list[str]]:
    """`pub struct Raw* { pub field: ... }` -> field names, from src/config.rs."""
    out = {}
    for m in re.finditer(r"pub struct (Raw\w+) \{(.*?)\n\}", CONFIG_RS, re.S):
        out[m.group(1)] = re.findall(r"^\s*pub (\w+):", m.group(2), re.M)
    return out


def _rust_enum(name: str) -> list[str]:
    m = re.search(rf"#\[serde\(rename_all = \"(lowercase|snake_case)\"\)\]\s*pub enum {name} \{{(.*?)\n\}}", CONFIG_RS, re.S)
    assert m, f"enum {name} not found in src/config.rs"
    variants = re.findall(r"^\s*(\w+),", m.group(2), re.M)
    if m.group(1) == "lowercase":
        return [v.lower() for v in variants]
    return [re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower() for v in variants]


# Which schema object mirrors which serde struct.
STRUCT_TO_SCHEMA = {
    "RawConfig": lambda s: s["properties"],
    "RawVersion": lambda s: s["$defs"]["version"]["properties"],
    "RawRamp": lambda s: s["$defs"]["ramp"]["properties"],
    "RawRule": lambda s: s["$defs"]["rule"]["properties"],
    "RawSession": lambda s: s["$defs"]["sessionFields"]["properties"],
    "RawCookie": lambda s: s["$defs"]["cookieFields"]["properties"],
    "RawKey": lambda s: s["$defs"]["keyFields"]["properties"],
    "RawHeaders": lambda s: s["$defs"]["headers"]["properties"],
    "RawMatch": lambda s: s["$defs"]["match"]["properties"],
}


def test_every_serde_struct_is_mirrored_key_for_key():
    structs = _rust_structs()
    assert set(structs) == set(STRUCT_TO_SCHEMA), "a Raw* struct was added or renamed in src/config.rs: map it here and in the schema"
    for struct, fields in structs.items():
        assert "deny_unknown_fields" in CONFIG_RS.split(f"pub struct {struct} ")[0].rsplit("pub struct", 1)[-1], struct
        assert sorted(STRUCT_TO_SCHEMA[struct](SCHEMA)) == sorted(fields), struct


def test_route_entries_take_top_level_keys_but_routes():
    entry = SCHEMA["$defs"]["routeEntry"]
    assert entry["additionalProperties"] is False
    top = set(SCHEMA["properties"]) - {"routes", "on_invalid_config"}
    assert set(entry["properties"]) == top | {"name", "match", "enabled"}
    assert entry["required"] == ["match"]


def test_enums_match_the_serde_enums():
    assert SCHEMA["properties"]["stickiness"]["enum"] == _rust_enum("Stickiness")
    assert SCHEMA["properties"]["on_invalid_config"]["enum"] == _rust_enum("OnInvalidConfig")
    assert SCHEMA["$defs"]["sessionFields"]["properties"]["mode"]["enum"] == _rust_enum("Mode")


def _objects(node, path="$"):
    if isinstance(node, dict):
        if "properties" in node:
            yield path, node
        for k, v in node.items():
            yield from _objects(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{path}/{i}")


def _resolve(node: dict) -> dict:
    while "$ref" in node and "description" not in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_every_object_is_closed_and_every_key_documented():
    for path, obj in _objects(SCHEMA):
        # Objects that only add constraints inside allOf/if/then reuse the
        # closed object next to them.
        if obj.get("type") == "object":
            assert obj.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, sub in obj["properties"].items():
                assert _resolve(sub).get("description"), f"{path}/properties/{key} has no description"


def _const(name: str):
    m = re.search(rf"pub const {name}: [^=]+= ([^;]+);", COMPILE_RS)
    assert m, f"defaults::{name} not found in src/compile.rs"
    v = m.group(1).strip()
    if v.startswith('"'):
        return json.loads(v)
    product = 1
    for factor in v.replace("_", "").split("*"):  # such as 10 * 365 * 86_400
        product *= int(factor.strip())
    return product


def test_defaults_and_ranges_are_the_filters():
    d = SCHEMA["$defs"]
    assert SCHEMA["properties"]["weight_total"]["default"] == _const("WEIGHT_TOTAL")
    assert SCHEMA["properties"]["weight_total"]["maximum"] == _const("MAX_TOTAL")
    assert d["cookieFields"]["properties"]["name"]["default"] == _const("COOKIE_NAME")
    assert d["headers"]["properties"]["version"]["default"] == _const("VERSION_HEADER")
    assert d["headers"]["properties"]["hash"]["default"] == _const("HASH_HEADER")
    assert d["headers"]["properties"]["endpoint"]["default"] == _const("ENDPOINT_HEADER")
    for key in ("max_age", "expires"):
        assert d["cookieFields"]["properties"][key]["maximum"] == _const("MAX_TTL")
    assert d["sessionFields"]["properties"]["ttl"]["maximum"] == _const("MAX_TTL")
    assert str(_const("TTL")) in d["sessionFields"]["properties"]["ttl"]["description"]


# ---------------------------------------------------------------------------
# Configs


EXAMPLES = example_configs()


def test_examples_were_found():
    labels = [label for label, _ in EXAMPLES]
    assert any(label.startswith("tests/schema/good/") for label in labels)
    assert any(label.startswith("istio/") for label in labels), "no Istio pluginConfig found"
    if list((REPO_ROOT / "envoy-config").glob("*.yaml")):
        assert any(label.startswith("envoy-config/") for label in labels), "no plugin JSON found in envoy-config/"


@pytest.mark.parametrize("label,text", EXAMPLES, ids=[label for label, _ in EXAMPLES])
def test_example_config_validates(label, text):
    assert errors(load(text)) == []


def test_enough_bad_configs():
    assert len(json_files("bad")) >= 15
    assert json_files("filter-only")


@pytest.mark.parametrize("path", json_files("bad"), ids=lambda p: p.name)
def test_bad_config_is_rejected_by_the_schema(path):
    assert errors(json.loads(path.read_text())), f"{rel(path)} is accepted by the schema"


@pytest.mark.parametrize("path", json_files("filter-only"), ids=lambda p: p.name)
def test_filter_only_config_is_accepted_by_the_schema(path):
    # If the schema learns to reject one of these, move it to bad/.
    assert errors(json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", json_files("stricter"), ids=lambda p: p.name)
def test_stricter_config_is_rejected_by_the_schema(path):
    assert errors(json.loads(path.read_text()))


def test_check_jsonschema_cli_agrees(tmp_path):
    """The CI recipe of istio/README.md: check-jsonschema --schemafile ..."""
    exe = Path(sys.executable).with_name("check-jsonschema")
    if not exe.exists():
        pytest.fail(f"{exe} missing: install tests/requirements.txt into the venv", pytrace=False)
    good = [str(p) for p in json_files("good")]
    r = subprocess.run([str(exe), "--schemafile", str(SCHEMA_PATH), *good], capture_output=True, text=True,
                       timeout=testkit.hang_guard(600))
    assert r.returncode == 0, r.stdout + r.stderr
    for bad in json_files("bad")[:3]:
        r = subprocess.run([str(exe), "--schemafile", str(SCHEMA_PATH), str(bad)], capture_output=True, text=True,
                           timeout=testkit.hang_guard(600))
        assert r.returncode == 1, f"{bad.name}: {r.stdout}{r.stderr}"


def test_schema_is_the_generators_output():
    """config.schema.json is generated by tests/schema/gen_schema.py."""
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("gen_schema.py"))], capture_output=True, text=True,
                       timeout=testkit.hang_guard(300))
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCHEMA_PATH.read_text(), "run: python3 tests/schema/gen_schema.py > config.schema.json"
