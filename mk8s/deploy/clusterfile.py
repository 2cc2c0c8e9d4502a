"""Reading cluster.yaml: bounded YAML parsing, line numbers, and the JSON Schema.

:func:`read_document` refuses what is not a small regular file of UTF-8 YAML, alias
bombs and deep nesting (before anything expands them), duplicate keys, another
``apiVersion``/``kind``, and every schema error (sorted by line, as
``FILE:LINE: FIELD: problem``). The :class:`Document` it returns knows each value's
line, so later checks name the line too. Every problem is a ClusterFileError (exit 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import yaml

from mk8s.errors import ClusterFileError
from mk8s.files import read_regular
from mk8s.schemas import MAX_ERRORS, json_path, problem
from mk8s.schemas import validator as schema_validator
from mk8s.untrusted import shown

SCHEMA = "cluster.schema.json"
API_VERSION = "mk8s/v1alpha1"
KIND = "Cluster"
# How many schema errors one message shows before "... and N more".
MAX_ERRORS_SHOWN = 8
# Bounds that keep a hostile file from costing time or memory: real files are a few KiB.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64
FORMAT_HINT = "see the README (Deploying) and schemas/cluster.schema.json for the format"


@dataclass(frozen=True)
class Document:
    """A cluster file that parsed and passed the schema, with its YAML node tree."""

    label: str
    path: Path
    root: yaml.Node
    data: dict[str, Any]

    def line(self, where: Iterable[str | int], *, key: bool = False) -> int:
        return _locate(self.root, where, key=key)

    def fail(
        self, where: list[str | int], problem: str, fix: str, *, key: bool = False
    ) -> NoReturn:
        """Raise ClusterFileError ``FILE:LINE: FIELD: problem; fix``."""
        line = self.line(where, key=key)
        raise ClusterFileError(f"{self.label}:{line}: {json_path(where)}: {problem}", fix)


def read_document(path: Path, label: str) -> Document:
    """Read, parse and schema-check ``path``; ClusterFileError on any problem."""
    raw = read_regular(
        path,
        what="cluster file",
        max_size=MAX_FILE_BYTES,
        error=ClusterFileError,
        fix="pass the cluster file with -f PATH",
        missing=f"{label}: no such file",
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClusterFileError(f"{label}: not UTF-8 text ({e})", "save it as UTF-8") from e
    root, data = _parse(label, text)
    _validate(label, root, data)
    return Document(label, path, root, data)


def _parse(label: str, text: str) -> tuple[yaml.Node, Any]:
    try:
        # The reader checks the characters as it is built: a control character is a
        # YAML error like any other, never a crash.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:
        raise ClusterFileError(f"{label}: not valid YAML: {shown(e)}", "fix the YAML syntax") from e
    try:
        root = loader.get_single_node()
        if root is None:
            raise ClusterFileError(
                f"{label}: the file is empty",
                FORMAT_HINT,
            )
        _check_size(label, root)
        _check_duplicate_keys(label, root, ())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = shown(e.problem or e.context or "invalid YAML")
        raise ClusterFileError(f"{where}: not valid YAML: {problem}", "fix the YAML syntax") from e
    except yaml.YAMLError as e:
        raise ClusterFileError(f"{label}: not valid YAML: {shown(e)}", "fix the YAML syntax") from e
    except RecursionError as e:
        raise ClusterFileError(
            f"{label}: nested more than this parser can follow", "a cluster file is shallow"
        ) from e
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ClusterFileError(
            f"{label}:{root.start_mark.line + 1}: expected a mapping with apiVersion, kind,"
            f" metadata and spec, found {type(data).__name__}",
            FORMAT_HINT,
        )
    return root, data


def _check_size(label: str, root: yaml.Node) -> None:
    """Refuse alias bombs and deep nesting before anything expands them.

    Walks the composed graph (aliases are shared nodes there, so nothing is expanded
    yet) counting every node as the constructed document would hold it.
    """
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ClusterFileError(
                f"{label}: expands to more than {MAX_NODES} values (YAML aliases?)",
                "write the values out; a cluster file needs no alias expansion this large",
            )
        if depth > MAX_DEPTH:
            raise ClusterFileError(
                f"{label}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels",
                "a cluster file is shallow; check the indentation",
            )
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += [(k, depth + 1), (v, depth + 1)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, depth + 1) for item in node.value]


def _check_duplicate_keys(label: str, node: yaml.Node, path: tuple[str | int, ...]) -> None:
    # PyYAML silently keeps the last of two equal keys; a typo'd copy would go unseen.
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                raise ClusterFileError(
                    f"{label}:{k.start_mark.line + 1}: {json_path((*path, key))}: key"
                    f" appears twice (first on line {seen[key]})",
                    "keep one of them",
                )
            seen[key] = k.start_mark.line + 1
            _check_duplicate_keys(label, v, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(label, item, (*path, i))


def _locate(root: yaml.Node, path: Iterable[str | int], *, key: bool = False) -> int:
    """1-based line of the value at ``path`` (of its key if ``key``); nearest parent."""
    node = root
    line = root.start_mark.line + 1
    for part in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if k.value == part:
                    nxt = v
                    line = (k if key else v).start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


# ------------------------------------------------------------------------ validation


def _validate(label: str, root: yaml.Node, data: dict[str, Any]) -> None:
    # apiVersion and kind first: a file of another kind would drown in schema errors.
    if data.get("apiVersion") != API_VERSION:
        raise ClusterFileError(
            f"{label}:{_locate(root, ['apiVersion'])}: apiVersion:"
            f" {shown(repr(data.get('apiVersion')))} is not supported",
            f"set apiVersion: {API_VERSION}",
        )
    if data.get("kind") != KIND:
        raise ClusterFileError(
            f"{label}:{_locate(root, ['kind'])}: kind: {shown(repr(data.get('kind')))} is not"
            f" {KIND!r}",
            f"set kind: {KIND} (is this a cluster file?)",
        )
    validator = schema_validator(SCHEMA)
    found: list[tuple[int, str]] = []
    for err in islice(_expand(validator.iter_errors(data)), MAX_ERRORS):
        path = list(err.absolute_path)
        message = problem(err)
        line = _locate(root, path)
        if (
            err.validator == "additionalProperties"
            and isinstance(err.instance, dict)
            and isinstance(err.schema, Mapping)
        ):
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in allowed)
            if extra:
                path = [*path, extra[0]]
                line = _locate(root, path, key=True)
                message = f"unknown field (allowed here: {', '.join(sorted(allowed))})"
        found.append((line, f"{label}:{line}: {json_path(path)}: {message}"))
    if not found:
        return
    found.sort(key=lambda t: t[0])
    lines = [m for _, m in found]
    if len(lines) == 1:
        raise ClusterFileError(lines[0], None)
    first = lines[:MAX_ERRORS_SHOWN]
    more = len(lines) - len(first)
    body = "\n".join(first) + (f"\n... and {more} more" if more else "")
    raise ClusterFileError(
        f"{label}: {len(lines)} errors against the schema\n{body}", None, lines=True
    )


def _expand(
    errors: Iterable[jsonschema.ValidationError],
) -> Iterable[jsonschema.ValidationError]:
    """Replace "X is not valid under any of the given schemas" by the useful half.

    The only anyOf is ``{object} | null`` (node.ssh.bastion); a non-null value gets
    the object branch's own errors ("'address' is a required property").
    """
    for err in errors:
        if err.validator == "anyOf" and err.instance is not None and err.context:
            first = [e for e in err.context if e.relative_schema_path[0] == 0]
            if first:
                yield from _expand(first)
                continue
        yield err
