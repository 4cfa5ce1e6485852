"""The docs' error table (docs/service/errors.md) lists every code the API can answer, with its status, and no other.

The codes are read from where they are made: the error classes (`prototok.errors`,
`service.errors`, and those the app and its routes define), each with its `code` and `status`;
and the answers that `app/errors.py` and the routes build themselves (`error_body("code", ...)`,
the status -> code map of the web stack's failures, the validation codes), read from their
source so that a new literal code is seen too. A code added without a row in the table fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "service" / "errors.md"
ANY_STATUS = 0  # a code answered with whatever status the web stack chose (`http_error`)
# Errors of `prototok keys create|revoke` (service/keys.py), raised only by the CLI: no route
# creates or revokes keys (test_cli_only_codes_stay_out_of_the_api checks that).
CLI_ONLY = {"key_exists": "KeyExists", "no_such_key": "NoSuchKey"}


def docs_table() -> dict[str, set[int]]:
    """code -> the statuses of its rows, from the page's table (`| 413 | `a` / `b` | when |`)."""
    section = DOCS.read_text(encoding="utf-8")
    table: dict[str, set[int]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"\d{3}\b", cells[0]):
            continue
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            table.setdefault(code, set()).update(int(s) for s in re.findall(r"\d{3}", cells[0]))
    return table


def subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("prototok", "service", "app")


def class_codes() -> dict[str, set[int]]:
    """code -> statuses of every error class the API can raise (or ANY_STATUS where the class
    takes its status per instance), after importing the whole app (every route's module)."""
    from starlette.exceptions import HTTPException

    import app.main  # noqa: F401 - defines every route's error classes
    from prototok.errors import PrototokError

    codes: dict[str, set[int]] = {}
    for cls in subclasses(PrototokError):
        if ours(cls) and cls.__name__ != "ServiceError":  # the service's base: never raised itself
            codes.setdefault(cls.code, set()).add(cls.status)
    for cls in subclasses(HTTPException):
        if ours(cls) and "code" in vars(cls):
            codes.setdefault(cls.code, set()).add(ANY_STATUS)
    return codes


def literal(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def status_to_code_maps(tree: ast.AST) -> dict[str, dict[int, str]]:
    """Names bound to a dict literal of int -> str: a status -> code map."""
    maps = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and node.value.keys:
            pairs = {literal(k): literal(v) for k, v in zip(node.value.keys, node.value.values)}
            if all(isinstance(k, int) and isinstance(v, str) for k, v in pairs.items()):
                maps |= {t.id: pairs for t in node.targets if isinstance(t, ast.Name)}
    return maps


def answered(node: ast.AST) -> tuple[str, int] | None:
    """(code, status) of `JSONResponse(error_body("code", ...), status_code=N)`."""
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "JSONResponse" and node.args):
        return None
    inner = node.args[0]
    if not (isinstance(inner, ast.Call) and getattr(inner.func, "id", None) == "error_body" and inner.args):
        return None
    code = literal(inner.args[0])
    status = next((literal(k.value) for k in node.keywords if k.arg == "status_code"), None)
    return (code, status if isinstance(status, int) else ANY_STATUS) if isinstance(code, str) else None


def returned(node: ast.AST) -> tuple[str, int] | None:
    """(code, status) of `return N, "code"` (a function that picks the status and code)."""
    if not (isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2):
        return None
    status, code = (literal(e) for e in node.value.elts)
    return (code, status) if isinstance(status, int) and isinstance(code, str) else None


def fallback(node: ast.AST, maps: dict[str, dict[int, str]]) -> tuple[str, int] | None:
    """(code, ANY_STATUS) of `a_status_map.get(status, "code")`: the code of any status not in the map."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and getattr(node.func.value, "id", None) in maps and len(node.args) == 2):
        return None
    code = literal(node.args[1])
    return (code, ANY_STATUS) if isinstance(code, str) else None


def source_codes(path: Path) -> dict[str, set[int]]:
    """code -> statuses of the answers a module builds from literal codes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    maps = status_to_code_maps(tree)
    found = [(code, status) for table in maps.values() for status, code in table.items()]
    for node in ast.walk(tree):
        found += [pair for pair in (answered(node), returned(node), fallback(node, maps)) if pair]
    codes: dict[str, set[int]] = {}
    for code, status in found:
        codes.setdefault(code, set()).add(status)
    return codes


def api_codes() -> dict[str, set[int]]:
    codes = {code: statuses for code, statuses in class_codes().items() if code not in CLI_ONLY}
    for path in sorted((REPO / "app").rglob("*.py")):
        for code, statuses in source_codes(path).items():
            codes.setdefault(code, set()).update(statuses)
    return codes


def test_the_scan_finds_the_codes_of_each_kind():
    """Guards the scan itself: a class, a web-stack status, a validation code, a literal answer."""
    codes = api_codes()
    assert codes["unknown_model"] == {404} and codes["corrupt_job_record"] == {500}
    assert codes["method_not_allowed"] == {405} and ANY_STATUS in codes["http_error"]
    assert codes["bad_vectors"] == {422} and codes["malformed_json"] == {400}
    assert codes["internal_error"] == {500} and codes["not_ready"] == {503}


def test_the_docs_error_table_lists_every_code_the_api_answers_and_no_other():
    table, codes = docs_table(), api_codes()
    missing = sorted(set(codes) - set(table))
    assert not missing, f"docs/service/errors.md's table has no row for {missing}"
    stale = sorted(set(table) - set(codes))
    assert not stale, f"docs/service/errors.md's table lists codes the API never answers: {stale}"
    wrong = {code: (sorted(statuses - {ANY_STATUS}), sorted(table[code])) for code, statuses in codes.items()
             if not statuses - {ANY_STATUS} <= table[code]}
    assert not wrong, f"code: (statuses the API answers it with, statuses the table gives): {wrong}"


def test_cli_only_codes_stay_out_of_the_api():
    for path in (REPO / "app").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(KeyExists|NoSuchKey|revoke)\b|KeyStore\([^)]*\)\.create", source), path
    assert set(CLI_ONLY) <= set(class_codes())
