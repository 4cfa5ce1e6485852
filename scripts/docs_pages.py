"""Pages of the docs site made at build time (mkdocs-gen-files, mkdocs.yml):

- service/api.md: the API reference, from the app's own OpenAPI document (`app.main.app.openapi()`),
  so it says exactly what the running API answers;
- benchmarks/results/: bench/results/*.md and their figures, as they are in the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def kind(schema: dict | bool) -> str:
    """A schema's type in a few words: `integer`, `list of number`, `EncodeOptions`, `string | null`."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " | ".join(kind(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {kind(schema.get('items', {}))}"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        return f"object of {kind(schema['additionalProperties'])}"
    return schema.get("type", "any")


def cell(text: object) -> str:
    return str(text).replace("\n", " ").replace("|", "\\|")


def api_reference() -> str:
    from app.main import app

    doc = app.openapi()
    lines = [f"# API reference (version {doc['info']['version']})", "",
             ("Generated from the API's own OpenAPI document when the docs are built; a running API serves the "
             "same document at `/openapi.json` and an interactive page at `/docs`. Errors are JSON "
             "`{\"code\", \"message\"}`: [Errors](errors.md). Every `/v1` route needs `Authorization: Bearer KEY` "
             "unless the service runs with `PROTOTOK_AUTH=off` ([Security and keys](security.md))."), ""]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            lines += [f"## `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**", ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | type |", "|---|---|---|---|"]
                lines += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                          f"{cell(kind(p.get('schema', {})))} |" for p in params]
                lines.append("")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                lines.append("Request body: " + "; ".join(
                    f"`{ctype}` ({cell(kind(c.get('schema', {})) if '$ref' in c.get('schema', {}) else c.get('schema', {}).get('title') or kind(c.get('schema', {})))})"
                    for ctype, c in body.items()))
                lines.append("")
            lines += ["| status | meaning | body |", "|---|---|---|"]
            for status, answer in op.get("responses", {}).items():
                content = answer.get("content", {})
                bodies = "; ".join(f"`{ctype}`" + (f" {kind(c['schema'])}" if "$ref" in c.get("schema", {}) else "")
                                   for ctype, c in content.items())
                lines.append(f"| {status} | {cell(answer.get('description', ''))} | {cell(bodies)} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [cell(schema["description"]), ""]
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            lines += ["| field | type | required | description |", "|---|---|---|---|"]
            lines += [f"| `{field}` | {cell(kind(p))} | {'yes' if field in required else 'no'} | "
                      f"{cell(p.get('description', ''))} |" for field, p in props.items()]
            lines.append("")
        elif "enum" in schema:
            lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
    return "\n".join(lines)


with mkdocs_gen_files.open("service/api.md", "w") as out:
    out.write(api_reference())

for path in sorted((REPO / "bench" / "results").iterdir()):
    if path.suffix in (".md", ".png"):
        with mkdocs_gen_files.open(f"benchmarks/results/{path.name}", "wb") as out:
            out.write(path.read_bytes())
