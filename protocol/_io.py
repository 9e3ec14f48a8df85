"""Reading YAML/JSON input files and turning pydantic errors into readable problems.

YAML is read with a safe loader that does *not* turn ``2024-02-30`` into a date (PyYAML
would raise a bare ``ValueError`` for an impossible date); dates stay strings, and
pydantic reports them against the field that holds them. The YAML node tree is kept
so that a problem can name the line of the offending value.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ._errors import InputError, Problem

M = TypeVar("M", bound=BaseModel)


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader without implicit timestamps (dates are validated by pydantic, not YAML)
    that rejects a key given twice in one mapping: YAML forbids it, and silently keeping the
    last value could change a patient's birth date or a dose without anyone noticing."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        self.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            # A plain key is compared as its resolved tag and text (no object to build); any
            # other key as the object it makes.
            if isinstance(key_node, yaml.ScalarNode):
                key: Any = (key_node.tag, key_node.value)
            else:
                key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let the base class report it
                break
            if first is not None:
                shown = key[1] if isinstance(key_node, yaml.ScalarNode) else key
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown!r} (first given on line {first.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # Called by the parser for every node: the tag of a plain scalar is the same wherever
        # its text appears (keys such as `value:` or `evidence:` recur thousands of times).
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(value) <= 40 and len(_RESOLVED) < 20_000:
                    _RESOLVED[value] = tag
            return tag
        return super().resolve(kind, value, implicit)

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            digits = len(str(node.value))
            if digits > sys.get_int_max_str_digits():
                problem = f"a number of {digits:,} characters (at most {sys.get_int_max_str_digits():,} digits)"
            else:  # an explicit `!!int abc`
                problem = f"expected a whole number after !!int, got {_shown(node.value)}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def construct_yaml_float(self, node: Any) -> Any:
        try:
            return super().construct_yaml_float(node)
        except ValueError:  # an explicit `!!float abc`
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a number after !!float, got {_shown(node.value)}", node.start_mark) from None

    def construct_yaml_bool(self, node: Any) -> Any:
        try:
            return super().construct_yaml_bool(node)
        except KeyError:  # an explicit `!!bool abc`
            raise yaml.constructor.ConstructorError(
                None, None, f"expected true or false after !!bool, got {_shown(node.value)}", node.start_mark) from None


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
#: The tags a patient or definition file can hold: text, numbers, true/false, null, lists and
#: mappings (and `<<` merge keys). PyYAML's other safe tags (!!binary, !!timestamp, !!set,
#: !!omap, !!pairs) make values no field accepts, and some of them fail inside PyYAML.
_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP, _MERGE})
_RESOLVED: dict[str, str] = {}

_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.add_constructor(_FLOAT, _Loader.construct_yaml_float)
_Loader.add_constructor(_BOOL, _Loader.construct_yaml_bool)

_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Document:
    """A parsed input file: its data plus what is needed to point at a line."""

    __slots__ = ("_node", "_text", "data", "name", "sha256")

    def __init__(self, name: str, data: Any, text: str | None = None, node: Any = None) -> None:
        self.name = name
        self.data = data
        self.sha256: str | None = None  # of the bytes read (set by read_document)
        self._text = None if node is not None else text  # YAML source, composed only when a line is needed
        self._node: Any = node  # the node tree the data was built from (kept: composing again costs as much)

    def line_of(self, loc: Iterable[Any]) -> int | None:
        """1-based line of the value at ``loc`` (YAML only), or of its nearest parent."""
        if self._node is None and self._text is not None:
            self._node = yaml.compose(self._text, Loader=_Loader)
            self._text = None
        node = self._node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key in loc:
            if isinstance(node, yaml.MappingNode):
                nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
            else:
                nxt = None
            if nxt is None:
                break
            node = nxt
            line = node.start_mark.line + 1
        return line


#: The largest input file read (patient, definition, site amendment, cohort): checked on the
#: open file before reading, so ``/dev/zero`` or a 2 GB file is refused at once.
MAX_INPUT_BYTES = 10 * 1024 * 1024


def read_input(path: str | os.PathLike[str], *, error: type[InputError] = InputError,
               limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or raise ``error`` naming it.

    A device, pipe or socket is refused before anything is read (``/dev/zero`` would never
    end), and so is a file larger than ``limit`` (checked with ``fstat`` and again while
    reading, for files whose size the system does not know).

    >>> read_input("/dev/zero")  # doctest: +SKIP
    InputError: /dev/zero: expected a regular file, got a character device
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang (regular files ignore it).
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(Problem(name, "", "no such file")) from None
    except IsADirectoryError:
        raise error(Problem(name, "", "expected a file, got a directory")) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise error(Problem(name, "", f"cannot read: {getattr(exc, 'strerror', None) or exc}")) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(Problem(name, "", "expected a file, got a directory"))
        raise error(Problem(name, "", f"expected a regular file, got {_file_kind(st.st_mode)}"))
    with os.fdopen(fd, "rb") as fh:
        too_big = f"expected a file of at most {limit // (1024 * 1024)} MB, got "
        if st.st_size > limit:
            raise error(Problem(name, "", f"{too_big}{st.st_size:,} bytes"))
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(Problem(name, "", f"cannot read: {exc.strerror}")) from None
    if len(data) > limit:
        raise error(Problem(name, "", f"{too_big}more than {limit:,} bytes"))
    return data


def _file_kind(mode: int) -> str:
    for test, word in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "something that is not a regular file"


def decode_text(data: bytes, name: str, *, error: type[InputError] = InputError) -> str:
    """UTF-8 text (a leading byte-order mark is dropped), or raise ``error`` naming the file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(Problem(name, "", "expected UTF-8 text, got UTF-16 (save the file as UTF-8)"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(Problem(name, "", f"expected UTF-8 text, got undecodable bytes at offset {exc.start}")) from None
    return text.removeprefix("\ufeff")


def read_document(path: str | os.PathLike[str], *, error: type[InputError] = InputError) -> Document:
    """Read a YAML or JSON file into a :class:`Document`, or raise ``error`` naming the file.

    ``Document.sha256`` is the SHA-256 of the bytes that were parsed.
    """
    name = os.fspath(path)
    data = read_input(path, error=error)
    doc = parse_text(decode_text(data, name, error=error), name, json_only=Path(name).suffix.lower() == ".json",
                     error=error)
    doc.sha256 = hashlib.sha256(data).hexdigest()
    return doc


#: Limits on the shape of a parsed input, checked before anything is validated. The shipped
#: definitions have under 2,000 values nested 11 deep; a registry export of two years of
#: daily entries about 20,000. A YAML alias stands for a copy of what it names, so it is
#: counted as often as it is used: 30 nested aliases of 2 make 2³⁰ values from 1 KB of text.
MAX_NODES = 200_000
MAX_DEPTH = 50
#: At most this many problems are listed for one file (then how many more there are).
MAX_PROBLEMS = 50

#: The dates a file or the command line may give (issue 16: a plan from 9999-01-01 ran past
#: year 9999; a typo such as 0202 is refused).
DATE_RANGE = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is parsed and validated.

    Parsing allocates one object per value and keeps them all: every few thousand
    allocations the collector walks the whole growing tree, finds nothing to free, and so
    parsing a 1 MB file took five times as long (1.6 s instead of 0.3 s). Reference
    counting still frees everything; the collector runs again afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Refused(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def parse_text(text: str, name: str, *, json_only: bool = False, error: type[InputError] = InputError) -> Document:
    """Parse YAML (a superset of JSON) or, with ``json_only``, strict JSON.

    Refused with ``error`` naming the file (and line, where known): a syntax error, a key
    given twice in one mapping (YAML and JSON alike), a number of more than 4,300 digits,
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values once aliases are
    expanded, a recursive alias.
    """
    try:
        with _gc_paused():
            if json_only:
                data = _parse_json(text)
                _check_data(data)
                return Document(name, data)
            data, node = _parse_yaml(text)
            return Document(name, data, text, node)
    except _Refused as exc:
        raise error(Problem(name, "", exc.message, exc.line)) from None
    except json.JSONDecodeError as exc:
        raise error(Problem(name, "", f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise error(Problem(name, "", f"invalid YAML: the character U+{char:04X} is not allowed ({exc.reason})",
                            line)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise error(Problem(name, "", f"invalid YAML: {reason}", mark.line + 1 if mark else None)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"invalid JSON: duplicate key {key!r} in one object (only one value can be meant)")
        out[key] = value
    return out


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _Refused(f"invalid JSON: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        # int(): "Exceeds the limit (4300 digits) for integer string conversion".
        raise _Refused(f"invalid JSON: a number of more than {sys.get_int_max_str_digits():,} digits") from None


def _check_data(data: Any) -> None:
    """Depth and size of plain parsed data (JSON has no aliases: its size is its length)."""
    stack = [(data, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
        if count > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _parse_yaml(text: str) -> tuple[Any, Any]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        aliases = "&" in text  # without an anchor there is no alias, and no copy to count
        if aliases:
            _check_nodes(node)
        try:
            return _construct(loader, node), node
        except _Merge:
            _check_tags(node)
        try:
            data = loader.construct_document(node)
        except RecursionError:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep") from None
        if not aliases:
            _check_data(data)
        return data, node
    finally:
        loader.dispose()


def _check_tags(root: Any) -> None:
    """Refuse a tag outside :data:`_TAGS` anywhere in the graph (before PyYAML builds it)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _TAGS:
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise _Refused(f"invalid YAML: the tag {shown} is not supported (expected plain text, numbers, "
                           "true/false, lists and mappings)", node.start_mark.line + 1)
        stack.extend(_children(node))


class _Merge(Exception):
    """A `<<` merge key: built by PyYAML's own constructor instead."""


def _construct(loader: Any, root: Any) -> Any:
    """The data of a node graph in one pass without recursion, as PyYAML's safe constructor
    builds it but several times faster (PyYAML makes a generator per container), refusing
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values, keys given
    twice and tags outside :data:`_TAGS`. An alias is the same object as its anchor, as in
    PyYAML; :func:`_check_nodes` has already counted what it expands to.
    """
    memo: dict[int, Any] = {}
    todo: list[tuple[Any, Any, int]] = []
    count = 0

    def make(node: Any, depth: int, counted: bool = True) -> Any:
        nonlocal count
        key = id(node)
        if key in memo:
            return memo[key]
        if counted:  # values, not the keys that name them (as _check_data counts)
            count += 1
            if count > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES:,} values", node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", node.start_mark.line + 1)
        tag = node.tag
        if tag not in _TAGS:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise _Refused(f"invalid YAML: the tag {shown} is not supported (expected plain text, numbers, "
                           "true/false, lists and mappings)", node.start_mark.line + 1)
        if type(node) is yaml.ScalarNode:
            value = node.value
            if tag == _STR:
                obj: Any = value
            elif tag == _INT:
                # Decimal digits without a leading zero (YAML 1.1 reads 012 as octal):
                # int() directly; anything else through PyYAML's rules.
                if value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1) and len(value) < 4000:
                    obj = int(value)
                else:
                    obj = loader.construct_yaml_int(node)
            elif tag == _NULL:
                obj = None
            elif tag == _MERGE:
                raise _Merge
            elif tag == _FLOAT:
                obj = loader.construct_yaml_float(node)
            else:
                obj = loader.construct_yaml_bool(node)
            memo[key] = obj
            return obj
        if type(node) is yaml.SequenceNode and tag == _SEQ:
            obj = []
        elif type(node) is yaml.MappingNode and tag == _MAP:
            obj = {}
        else:
            kind = {yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping"}.get(type(node), "a value")
            raise _Refused(f"invalid YAML: {kind} cannot be {tag.replace('tag:yaml.org,2002:', '!!')}",
                           node.start_mark.line + 1)
        memo[key] = obj
        todo.append((node, obj, depth))
        return obj

    result = make(root, 1)
    done = 0
    while done < len(todo):  # in the order met: the first problem reported is the first in the file
        node, obj, depth = todo[done]
        done += 1
        if type(obj) is list:
            obj.extend([make(kid, depth + 1) for kid in node.value])
            continue
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is yaml.ScalarNode and key_node.tag == _MERGE:
                raise _Merge
            name = make(key_node, depth + 1, counted=False)
            try:
                first = seen.get(name)
            except TypeError:
                raise _Refused("invalid YAML: found unhashable key (a list or a mapping used as a key)",
                               key_node.start_mark.line + 1) from None
            if first is not None:  # the same key as the mapping holds it: 1 and 0x1, "a" and !!str a
                raise _Refused(f"invalid YAML: duplicate key {name!r} (first given on line {first.start_mark.line + 1})",
                               key_node.start_mark.line + 1)
            seen[name] = key_node
            obj[name] = make(value_node, depth + 1)
    return result


def _check_nodes(root: Any) -> None:
    """Depth and size of a YAML node graph, each alias counted as the copy it stands for.

    Linear in the number of distinct nodes: the size and depth of each node are computed
    once (post-order, no recursion) and reused wherever an alias points at it.
    """
    done: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = _children(node)
        if finished:
            active.discard(key)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            line = node.start_mark.line + 1
            if depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", line)
            if size > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES:,} values once aliases are expanded (aliases that multiply "
                               "the document are refused)", line)
            done[key] = (size, depth)
            continue
        if key in done:
            continue
        if key in active:
            raise _Refused("a recursive alias (a value that contains itself)", node.start_mark.line + 1)
        active.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in active:
                raise _Refused("a recursive alias (a value that contains itself)", kid.start_mark.line + 1)
            if id(kid) not in done:
                stack.append((kid, False))


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def format_loc(loc: Iterable[Any]) -> str:
    """``("measurements", 0, "weight_kg")`` → ``measurements[0].weight_kg``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


#: A value shown in a message is cut to this many characters (a 100,000-character field
#: would otherwise fill the terminal).
SHOWN_CHARS = 80


def _shown(value: Any) -> str:
    if isinstance(value, str):
        if len(value) > SHOWN_CHARS:
            return f"{value[:SHOWN_CHARS]!r}... ({len(value):,} characters)"
        return repr(value)
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of fields",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "date_type": "a date YYYY-MM-DD",
    "date_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_inexact": "a date YYYY-MM-DD (no time)",
    "finite_number": "a finite number",
}


def _expected(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"expected a number {op} {bound:g}" if isinstance(bound, (int, float)) else f"expected {op} {bound}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}"
    if kind == "enum":
        return f"expected {ctx.get('expected', 'one of the allowed values')}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}"
    if kind == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s)"
    if kind in ("string_too_short", "too_short"):
        return f"expected at least {ctx.get('min_length')} item(s)" if kind == "too_short" else "expected non-empty text"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = err["msg"]
    for prefix in ("Input should be ", "Value should be "):
        if msg.startswith(prefix):
            return "expected " + msg[len(prefix):]
    return msg


def problems_from_validation(exc: ValidationError, doc: Document) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` into one :class:`Problem` per error."""
    problems = []
    errors = exc.errors(include_url=False)
    for err in errors[:MAX_PROBLEMS]:
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        kind = err["type"]
        line = doc.line_of(loc)
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = "unknown field (not part of the format; check the spelling)"
        elif kind == "value_error":
            # Our own validators phrase the whole message ("expected ..., got ...").
            message = str((err.get("ctx") or {}).get("error", err["msg"]))
        else:
            message = f"{_expected(err)}, got {_shown(err.get('input'))}"
        problems.append(Problem(doc.name, format_loc(loc), message, line))
    if len(errors) > MAX_PROBLEMS:
        problems.append(Problem(doc.name, "", f"... and {len(errors) - MAX_PROBLEMS:,} more problems not listed"))
    return problems


def validate_document(
    model: type[M], doc: Document, *, error: type[InputError] = InputError, context: dict[str, Any] | None = None
) -> M:
    """Validate ``doc.data`` against ``model``; raise ``error`` listing every problem."""
    if not isinstance(doc.data, dict):
        raise error(Problem(doc.name, "", f"expected a mapping of fields at the top level, got {_shown(doc.data)}"))
    try:
        with _gc_paused():
            return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        with _gc_paused():
            problems = problems_from_validation(exc, doc)
        raise error(problems) from None


#: The environment variable that sets the mode of written outputs (octal, e.g. ``640``).
OUTPUT_MODE_ENV = "PROTOCOL_OUTPUT_MODE"
#: Outputs are created readable by their owner only, like the registry: a plan, a roadmap,
#: a calendar or an export names a patient and their treatment.
DEFAULT_OUTPUT_MODE = 0o600
_output_mode: int | None = None


def parse_mode(text: str, field: str = "--mode") -> int:
    """``"640"`` or ``"0o640"`` → ``0o640``; raise :class:`InputError` naming ``field`` otherwise."""
    value = text.strip().lower().removeprefix("0o")
    if re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    raise InputError(Problem("", field, f"expected a file mode in octal such as 600 or 640, got {text!r}"))


def set_output_mode(mode: int | None) -> None:
    """Set the mode of the files :func:`write_atomic` creates (None: back to the default)."""
    global _output_mode
    _output_mode = mode


def output_mode() -> int:
    """The mode written outputs get: :func:`set_output_mode` (the CLI's ``--mode``), else
    ``$PROTOCOL_OUTPUT_MODE``, else ``0600``."""
    if _output_mode is not None:
        return _output_mode
    env = os.environ.get(OUTPUT_MODE_ENV)
    return parse_mode(env, f"${OUTPUT_MODE_ENV}") if env else DEFAULT_OUTPUT_MODE


def write_atomic(path: str | os.PathLike[str], write: Callable[[Any], None], *, binary: bool = False,
                 mode: int | None = None) -> None:
    """Write a file so that it is either complete or absent: temp file, then rename.

    ``write`` receives the open temporary file. Nothing is left behind if it raises. The file
    is created with ``mode`` (default :func:`output_mode`: ``0600`` unless asked otherwise),
    whatever the umask; an existing file is replaced, never opened for writing.

    >>> write_atomic("plan.txt", lambda fh: fh.write("..."))  # doctest: +SKIP
    """
    target = Path(path)
    chosen = output_mode() if mode is None else mode
    directory = target.parent if str(target.parent) else Path(".")
    try:
        if target.is_dir():
            raise InputError(Problem(str(path), "", "expected a file to write, got a folder"))
        if not directory.is_dir():
            raise InputError(Problem(str(path), "", f"cannot write: the folder {str(directory)!r} does not exist"))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(Problem(str(path), "", f"cannot write: {exc.strerror}")) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            os.fchmod(fh.fileno(), chosen)  # mkstemp creates 0600; only a mode asked for widens it
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_date(text: str, field: str) -> Any:
    """Parse a date given on the command line: ``YYYY-MM-DD`` or ``today`` (the local date).

    Raises :class:`InputError` naming ``field`` for anything else: ``2024-02-30``,
    ``21/11/2026``, other ISO 8601 forms (``2026-11``, ``2026-W47``), a date with a time.
    """
    value = text.strip()
    if value.lower() == "today":
        import pendulum

        return pendulum.today().date()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if not DATE_RANGE[0] <= day <= DATE_RANGE[1]:
                raise InputError(Problem("", field, f"expected a date from {DATE_RANGE[0]} to {DATE_RANGE[1]}, "
                                         f"got {day}"))
            return day
    raise InputError(Problem("", field, f"expected a date YYYY-MM-DD or 'today', got {text!r}"))
