"""A suite file's YAML: read within bounds, every key's line found, and errors collected against those lines.

Also `--set KEY=VALUE` items, whose values are YAML too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, SuiteErrors, short, unknown

# A suite is a page of text with hundreds of YAML nodes; these bound what a hostile or broken file can cost.
MAX_SUITE_BYTES = 1 << 20
MAX_NODES = 100_000  # counted after aliases are expanded: an alias bomb or a recursive alias exceeds it
MAX_DEPTH = 40


def _bounded(root) -> None:
    """Refuse a YAML document that expands to more than MAX_NODES nodes or nests deeper than MAX_DEPTH,
    before anything walks it recursively or builds it."""
    if root is None:
        return
    seen, stack = 0, [(root, ())]
    while stack:
        node, above = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)")
        if id(node) in above:
            raise ValueError("an alias that contains itself")
        if len(above) > MAX_DEPTH:
            raise RecursionError
        above += (id(node),)
        if isinstance(node, yaml.MappingNode):
            stack += [(n, above) for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(n, above) for n in node.value]


def _lines(node: yaml.Node, path: tuple, out: dict, dups: list) -> None:
    out.setdefault(path, node.start_mark.line + 1)  # a mapping key's own line beats its value's
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                dups.append((path + (key,), k.start_mark.line + 1))
            seen.add(key)
            out[path + (key,)] = k.start_mark.line + 1
            _lines(v, path + (key,), out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, path + (i,), out, dups)


def dotted(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


class Checker:
    """Collects located errors while a suite is read, so that one pass reports them all."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines, self.errors = file, lines, []
        self.cli: set[str] = set()  # settings given by --set, which later file overrides must not undo
        # Settings refused somewhere: their runs fall back to the default, which a cross-check must not judge.
        self.refused: set[str] = set()
        # Datasets and modes declared with errors: their runs are not resolved, so not cross-checked either.
        self.broken: dict[str, set] = {"dataset": set(), "mode": set()}
        self.notes: list[str] = []  # what is not an error but a user should know first (a download ahead)

    def error(self, path: tuple, message: str, file: str | None = None) -> None:
        line = None
        if file is None:  # a missing key has no line: point at the nearest enclosing one
            p = path
            while line is None and p:
                line, p = self.lines.get(p), p[:-1]
        err = ConfigError(file or self.file, dotted(path), message, line)
        if str(err) not in {str(e) for e in self.errors}:
            self.errors.append(err)

    def refuse(self, setting: str, path: tuple, message: str, file: str | None = None) -> None:
        """An error in a setting's value."""
        self.refused.add(setting)
        self.error(path, message, file)

    def broke(self, kind: str, name) -> None:
        """A dataset or mode declared with errors; only a string can be named in the matrix."""
        if isinstance(name, str):
            self.broken[kind].add(name)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def mapping(self, value, path: tuple, valid: set | dict | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type(value).__name__} {value!r}")
            return {}
        if valid is not None:
            for k in list(value):
                if k not in valid:
                    self.error(path + (k,), unknown("key", k, valid))
        return value


def parse_set(items: list[str]) -> list[tuple[str, Any]]:
    """--set KEY=VALUE items (VALUE read as YAML) -> [(key, value)]."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "expected KEY=VALUE, e.g. --set epochs=2")
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError as e:
            raise ConfigError("--set", key, f"cannot read value {raw!r}: {e}") from None
    return out


def read(path: Path) -> tuple[dict, Checker]:
    """The YAML as data plus a checker that knows every key's line; raises SuiteErrors if unreadable."""
    file = str(path)

    def fail(message: str, line: int | None = None):
        raise SuiteErrors([ConfigError(file, "", message, line)])

    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"cannot read suite file: {e.strerror or e}")
    if len(raw) > MAX_SUITE_BYTES:
        fail(f"{len(raw):,} bytes: a suite file is YAML text of at most {MAX_SUITE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        utf16 = " (it looks like UTF-16: save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        fail(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}{utf16}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _bounded(node)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        at = ""
        if mark is not None and mark.line < len(text.splitlines()):  # the line names the key, however long
            at = f" (line {mark.line + 1}: {short(text.splitlines()[mark.line].strip())})"
        fail(f"not valid YAML: {problem}{at}", mark.line + 1 if mark else None)
    except RecursionError:
        fail(f"nested more than {MAX_DEPTH} levels deep")
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        fail(f"not valid YAML: {str(e)[:200]}")
    lines, dups = {}, []
    if node is not None:
        _lines(node, (), lines, dups)
    c = Checker(file, lines)
    for p, line in dups:
        c.errors.append(ConfigError(file, dotted(p), "key appears twice (the first would be ignored)", line))
    if not isinstance(data, dict):
        c.error((), "a suite file must be a mapping with at least 'name' and 'matrix'")
        raise SuiteErrors(c.errors)
    return data, c
