"""The one place that bounds what mk8s takes from outside: text it may show, and
JSON or YAML documents it may parse.

Outside means anything mk8s did not write itself in this run: a registry's or a
release server's answer, a bundle, a lock, an auth file, a chart. Three rules hold
for every such input (docs/security.md lists the numbers):

* **Shown text** goes through :func:`shown`: credentials are masked, control
  characters *and newlines* are escaped (a registry cannot forge a second line on
  the operator's terminal), and the length is capped.
* **JSON** goes through :func:`load_json`: a byte cap before parsing and a nesting
  cap after, so no document can raise ``RecursionError`` or ``MemoryError``.
* **YAML** goes through :func:`load_yaml`: the same, and aliases are counted per use
  before anything is expanded (an alias bomb is refused, not built).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import yaml

from mk8s.errors import Mk8sError

#: Characters of one outside text shown in a message (a registry's error, a name).
SHOWN_CHARS = 200
#: Nesting levels any JSON or YAML document mk8s reads may have (OCI manifests,
#: locks, auth files, Chart.yaml all need fewer than ten).
MAX_DEPTH = 64
#: Values (scalars, mappings, sequences; YAML aliases counted per use) in one document.
MAX_VALUES = 1_000_000

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_AUTH_HEADER = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
_KEYED_SECRET = re.compile(
    r"(?i)(\"?(?:password|passwd|token|access_token|refresh_token|secret|auth|"
    r"identitytoken|registrytoken)\"?\s*[:=]\s*)(\"[^\"]*\"|[^\s,;&}]+)"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked as ``***``: the given secrets wherever they
    occur, a URL's userinfo, ``Basic``/``Bearer`` values and ``password=...``-style
    fields (what a registry reflecting a request would echo back)."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    text = _URL_USERINFO.sub(r"\1***@", text)
    text = _AUTH_HEADER.sub(r"\1 ***", text)
    return _KEYED_SECRET.sub(r"\1***", text)


def shown(text: object, *, limit: int = SHOWN_CHARS, secrets: Iterable[str] = ()) -> str:
    """Outside text made fit for one line of a message: credentials masked, every
    control character and newline escaped, at most ``limit`` characters (the rest is
    counted, not shown)."""
    from mk8s.ui import safe

    raw = str(text)
    if len(raw) > 64 * limit:  # never redact or escape megabytes only to cut them
        raw = raw[: 64 * limit]
    clean = safe(redact(raw, secrets))
    if len(clean) <= limit:
        return clean
    return f"{clean[:limit]}... ({len(str(text)) - limit} more characters)"


def shown_list(items: Iterable[object], *, limit: int = 10) -> str:
    """Up to ``limit`` items, each :func:`shown`, comma-separated, then how many more."""
    out: list[str] = []
    rest = 0
    for item in items:
        if len(out) < limit:
            out.append(shown(item))
        else:
            rest += 1
    return ", ".join(out) + (f" and {rest} more" if rest else "")


ErrorFactory = Callable[[str], Mk8sError]


def _fail(error: ErrorFactory, problem: str, cause: BaseException | None = None) -> NoReturn:
    raise error(problem) from cause


def check_depth(obj: Any, *, what: str, error: ErrorFactory, max_depth: int = MAX_DEPTH) -> None:
    """Refuse ``obj`` (parsed JSON or YAML) nested deeper than ``max_depth``, and with
    more than :data:`MAX_VALUES` values; iterative, so depth never costs stack."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            _fail(error, f"{what} holds more than {MAX_VALUES} values")
        if depth > max_depth:
            _fail(error, f"{what} is nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node if isinstance(k, tuple))
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)


def load_json(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse outside JSON within bounds; every failure is ``error(problem)``.

    ``max_bytes`` is checked before parsing; json's C scanner guards its own
    recursion (a ``RecursionError``, caught here), and :func:`check_depth` holds the
    documented limit after."""
    if len(data) > max_bytes:
        _fail(error, f"{what} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = json.loads(text)
    except UnicodeDecodeError as e:
        _fail(error, f"{what} is not UTF-8 text", e)
    except RecursionError as e:
        _fail(error, f"{what} is nested deeper than {max_depth} levels", e)
    except ValueError as e:  # JSONDecodeError, and int() of a 5000-digit number
        _fail(error, f"{what} is not valid JSON ({shown(e, limit=120)})", e)
    check_depth(obj, what=what, error=error, max_depth=max_depth)
    return obj


#: The tag :func:`yaml_nodes` leaves on an implicitly tagged node when asked not to
#: resolve tags (``tags=False``); :func:`resolve_tag` gives the real one.
UNRESOLVED = "tag:mk8s,2025:unresolved"
_IMPLICIT: dict[Any, list[tuple[str, Any]]] = yaml.SafeLoader.yaml_implicit_resolvers
_WILDCARD = _IMPLICIT.get(None, [])
_RESOLVERS = {k: v + _WILDCARD for k, v in _IMPLICIT.items() if k is not None}
_DEFAULT_TAGS = {
    yaml.ScalarNode: yaml.SafeLoader.DEFAULT_SCALAR_TAG,
    yaml.SequenceNode: yaml.SafeLoader.DEFAULT_SEQUENCE_TAG,
    yaml.MappingNode: yaml.SafeLoader.DEFAULT_MAPPING_TAG,
}


def _implicit_tag(kind: Any, value: Any, plain: bool) -> str:
    """PyYAML's implicit tag (its SafeLoader's resolvers), without path resolvers."""
    if kind is yaml.ScalarNode and plain:
        for tag, regexp in _RESOLVERS.get(value[:1], _WILDCARD):
            if regexp.match(value):
                return str(tag)
    return str(_DEFAULT_TAGS[kind])


def resolve_tag(node: yaml.Node) -> str:
    """The tag of a node from ``yaml_nodes(..., tags=False)`` (a plain scalar is
    resolved as PyYAML would; a non-specific ``!`` counts as no tag)."""
    if node.tag != UNRESOLVED:
        return str(node.tag)
    plain = isinstance(node, yaml.ScalarNode) and not node.style  # libyaml: "", PyYAML: None
    return _implicit_tag(type(node), node.value, plain)


def _loaders() -> tuple[Any, Any]:
    """libyaml's parser (PyYAML's pure-Python one takes over 30 s for 16 MiB), one
    resolving implicit tags as PyYAML does and one leaving them :data:`UNRESOLVED` (a
    checker that reads a few keys need not resolve two million scalars); pure Python
    where libyaml is missing. libyaml refuses nesting past 1000 levels itself, so its C
    recursion is bounded too."""
    base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

    class Resolving(base):  # type: ignore[misc,valid-type]
        def resolve(self, kind: Any, value: Any, implicit: tuple[bool, bool]) -> str:
            # a collection gets a bool, a scalar (plain_implicit, quoted_implicit)
            return _implicit_tag(kind, value, kind is yaml.ScalarNode and implicit[0])

        def descend_resolver(self, *_: object) -> None:
            pass

        def ascend_resolver(self, *_: object) -> None:
            pass

    class Bare(Resolving):
        def resolve(self, kind: Any, value: Any, implicit: tuple[bool, bool]) -> str:
            return UNRESOLVED

    return Resolving, Bare


_LOADER, _BARE_LOADER = _loaders()


def yaml_nodes(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    tags: bool = True,
) -> Iterator[yaml.Node]:
    """Each YAML document's root node, composed and checked (nesting, values, aliases
    counted per use) one at a time: nothing is constructed, so a caller that only looks
    at a few keys of each document stays linear and light (with ``tags=False``, implicit
    tags are left :data:`UNRESOLVED`: see :func:`resolve_tag`). Every failure is
    ``error(problem)``."""
    if len(data) > max_bytes:
        _fail(error, f"{what} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        _fail(error, f"{what} is not UTF-8 text", e)
    loader = (_LOADER if tags else _BARE_LOADER)(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _check_graph(node, what=what, error=error, max_depth=max_depth)
                yield node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1})" if mark else ""
        if "maximum nesting depth" in str(e.problem):  # libyaml's own limit (1000)
            _fail(error, f"{what} is nested deeper than {max_depth} levels{where}", e)
        problem = shown(e.problem or e.context or "invalid YAML", limit=120)
        _fail(error, f"{what} is not valid YAML{where}: {problem}", e)
    except yaml.YAMLError as e:
        _fail(error, f"{what} is not valid YAML: {shown(e, limit=120)}", e)
    except RecursionError as e:
        _fail(error, f"{what} is nested deeper than {max_depth} levels", e)
    finally:
        loader.dispose()


def load_yaml(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    multi: bool = False,
) -> Any:
    """Parse outside YAML within bounds (safe types only); every failure is
    ``error(problem)``. Nodes are counted and depth-checked on the composed graph, where
    an alias is a shared node, so an alias bomb is refused before it is expanded.
    With ``multi`` it returns the list of non-empty documents."""
    docs: list[Any] = []
    for node in yaml_nodes(data, what=what, error=error, max_bytes=max_bytes, max_depth=max_depth):
        if docs and not multi:
            _fail(error, f"{what} holds more than one YAML document")
        try:
            docs.append(yaml.constructor.SafeConstructor().construct_document(node))
        except yaml.YAMLError as e:
            _fail(error, f"{what} is not valid YAML: {shown(e, limit=120)}", e)
        except ValueError as e:  # int() of a huge number, a bad timestamp
            _fail(error, f"{what} holds a value YAML cannot read: {shown(e, limit=120)}", e)
    if multi:
        return [d for d in docs if d is not None]
    return docs[0] if docs else None


def _check_graph(root: yaml.Node, *, what: str, error: ErrorFactory, max_depth: int) -> None:
    """Count every node as the constructed document would hold it (an alias once per
    use) and check the nesting, one level at a time (no tuple per node: this walk is a
    fifth of checking a 16 MiB manifest); a level never grows past the value cap."""
    mapping, sequence = yaml.MappingNode, yaml.SequenceNode
    level: list[yaml.Node] = [root]
    depth = seen = 0
    while level:
        depth += 1
        seen += len(level)
        if depth > max_depth:
            line = level[0].start_mark.line + 1
            _fail(error, f"{what} is nested deeper than {max_depth} levels (line {line})")
        below: list[yaml.Node] = []
        for node in level:
            if isinstance(node, mapping):
                for pair in node.value:
                    below += pair
            elif isinstance(node, sequence):
                below += node.value
            else:
                continue
            if seen + len(below) > MAX_VALUES:
                break
        if seen + len(below) > MAX_VALUES:
            _fail(error, f"{what} expands to more than {MAX_VALUES} values (YAML aliases?)")
        level = below
