"""The loader: a config file's bytes into YAML data, with every limit enforced on the way.

The file must be a regular file of at most :data:`MAX_CONFIG_BYTES`; nesting,
duplicate keys and integer lengths are checked while composing (before any
value is built), each problem with its key path and line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from edge_actors.config.converters import _SHOWN_CHARS, _key_text
from edge_actors.config.errors import ConfigError, ConfigFileNotFoundError, ConfigIssue
from edge_actors.config.parser import parse_config
from edge_actors.config.settings import Config
from edge_actors.filekind import file_kind

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "MAX_INT_CHARS", "load_config"]


#: Largest config file read. A config is a few KB: this stops ``/dev/zero``-like input.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of YAML mappings and lists (a valid config needs 5).
MAX_CONFIG_DEPTH = 32
#: Most characters of an integer in the file (Python refuses to parse 4,300 digits).
MAX_INT_CHARS = 32

_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _path_text(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


class _TooDeep(Exception):
    def __init__(self, path: str, mark: yaml.Mark) -> None:
        super().__init__(path)
        self.path = path
        self.mark = mark


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting, rejects duplicate keys and over-long integers.

    While composing it knows the key path of every node, so each of these
    problems (and a value the constructor cannot build) is reported with its
    key path and line, and all duplicate keys / long integers at once.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[str] = []
        self.node_paths: dict[int, str] = {}
        self.found: list[ConfigIssue] = []

    # The stubs type these hooks loosely (index is a node, an int or None).
    def compose_node(self, parent: Any, index: Any) -> Any:
        if parent is None:
            return super().compose_node(parent, index)
        if isinstance(index, int):
            part = f"[{index}]"
        elif isinstance(index, yaml.ScalarNode):
            part = _key_text(index.value)
        elif index is None:
            part = "(key)"  # a mapping key being composed
        else:
            part = "(complex key)"
        self.key_path.append(part)
        try:
            if len(self.key_path) > MAX_CONFIG_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeep(_path_text(self.key_path), event.start_mark)
            node = super().compose_node(parent, index)
            self.node_paths.setdefault(id(node), _path_text(self.key_path))
            return node
        finally:
            self.key_path.pop()

    def compose_scalar_node(self, anchor: Any) -> Any:
        node = super().compose_scalar_node(anchor)
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            self.found.append(
                ConfigIssue(
                    _path_text(self.key_path),
                    f"integer of {len(node.value)} characters at line {node.start_mark.line + 1} "
                    f"is too long (at most {MAX_INT_CHARS})",
                )
            )
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                self.found.append(
                    ConfigIssue(
                        _path_text([*self.key_path, _key_text(key.value)]),
                        f"duplicate key at line {key.start_mark.line + 1} "
                        f"(first at line {seen.start_mark.line + 1})",
                    )
                )
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            # e.g. a date 2024-13-45: PyYAML lets the bare ValueError out.
            raise _BadValue(self.node_paths.get(id(node), ""), node.start_mark, exc) from None


class _BadValue(Exception):
    def __init__(self, path: str, mark: yaml.Mark, exc: Exception) -> None:
        super().__init__(path)
        self.path = path
        self.mark = mark
        self.exc = exc


def _read_config(source: str) -> bytes:
    """The bytes of the config file: a regular file of at most :data:`MAX_CONFIG_BYTES`."""

    def fail(message: str) -> ConfigError:
        return ConfigError(source, [ConfigIssue("", message)])

    try:
        # O_NONBLOCK: opening a FIFO must not wait forever for a writer.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigFileNotFoundError(source) from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise fail("cannot read: Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"not a regular file ({file_kind(st.st_mode)})")
        too_big = fail(
            f"larger than {MAX_CONFIG_BYTES // 1024} KiB ({st.st_size} bytes): not a config file"
        )
        if st.st_size > MAX_CONFIG_BYTES:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:  # it grew while being read
                raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _parse_yaml(text: str, source: str) -> object:
    """YAML ``text`` as Python data, or :class:`ConfigError` with key path and line."""

    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(source, [ConfigIssue(path, message)])

    try:
        # The reader checks every character here already.
        loader = _ConfigLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise fail(
            "",
            f"invalid YAML at line {line}, column {column}: "
            f"control character U+{exc.character:04X} is not allowed",
        ) from None
    try:
        node = loader.get_single_node()
        if loader.found:
            raise ConfigError(source, loader.found)
        return None if node is None else loader.construct_document(node)
    except _TooDeep as exc:
        raise fail(
            exc.path,
            f"nested deeper than {MAX_CONFIG_DEPTH} levels "
            f"(line {exc.mark.line + 1}, column {exc.mark.column + 1})",
        ) from None
    except _BadValue as exc:
        raise fail(
            exc.path,
            f"invalid value at line {exc.mark.line + 1}, column {exc.mark.column + 1}: "
            f"{str(exc.exc)[:_SHOWN_CHARS]}",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(x for x in (exc.context, exc.problem) if x) or "syntax error"
        raise fail("", f"invalid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise fail("", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate the YAML config at ``path``; ``None`` gives all defaults.

    Relative paths in the file resolve against the file's folder (the current
    directory when ``path`` is ``None``). An empty file gives all defaults.
    The file must be a regular file of at most :data:`MAX_CONFIG_BYTES`; nesting,
    duplicate keys and integer lengths are checked before any value is built.
    Raises :class:`ConfigError` listing every problem found.
    """
    if path is None:
        return parse_config({}, Path.cwd(), "<defaults>")
    source = os.fspath(path)
    file = Path(source)
    raw = _read_config(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, [ConfigIssue("", f"not valid UTF-8 (byte {exc.start})")]
        ) from None
    data = _parse_yaml(text, source)
    return parse_config(data, Path(os.path.abspath(file)).parent, source)
