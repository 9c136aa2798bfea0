"""YAML with line numbers (`consumer.yaml_lines`), shared by the rules and settings loaders."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from consumer.yaml_lines import (
    Loc,
    YamlError,
    YamlLimitError,
    load_yaml_with_lines,
    parse_yaml_with_lines,
)

TEXT = """\
# comment
top:
  name: x
  block:
    inner: 1
items:
  - a
  -
    key: v
    other: [1, 2]
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        pytest.param((), 2, id="document"),
        pytest.param(("top",), 2, id="mapping key"),
        pytest.param(("top", "name"), 3, id="scalar value"),
        pytest.param(("top", "block"), 4, id="block value points at its key"),
        pytest.param(("top", "block", "inner"), 5, id="nested"),
        pytest.param(("items", 0), 7, id="list item"),
        pytest.param(("items", 1), 9, id="mapping item starts at its first key"),
        pytest.param(("items", 1, "other", 1), 10, id="flow list item"),
        pytest.param(("top", "missing"), 2, id="missing key falls back to its parent"),
        pytest.param(("items", 1, "function-after[x]", "key"), 9, id="unknown part is skipped"),
        pytest.param(("nothing", "here"), 2, id="unknown root falls back to the document"),
    ],
)
def test_line_of(loc: Loc, line: int) -> None:
    _, index = parse_yaml_with_lines(TEXT)
    assert index.line_of(loc) == line


def test_boolean_and_number_keys_have_lines() -> None:
    data, index = parse_yaml_with_lines("m:\n  on: 1\n  0x10: 2\n  7: 3\n")
    assert data == {"m": {True: 1, 16: 2, 7: 3}}
    assert [index.line_of(("m", key)) for key in (True, 16, 7)] == [2, 3, 4]


def test_data_is_plain_safe_yaml() -> None:
    data, _ = parse_yaml_with_lines("base: &b {x: 1}\nflag: yes\nwhen: 2024-05-01\n")
    assert data == {"base": {"x": 1}, "flag": True, "when": date(2024, 5, 1)}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("base: &b {x: 1}\nuse:\n  <<: *b\n  x: 2\n", 3, id="merge key"),
        pytest.param("a: &x [1, *x]\n", 1, id="recursive alias"),
        pytest.param("a: 1\nb: *missing\n", 2, id="unknown alias"),
    ],
)
def test_aliases_are_refused_with_their_line(text: str, line: int) -> None:
    """Rules and settings never need aliases; refusing them rules out alias bombs."""
    with pytest.raises(YamlLimitError) as caught:
        parse_yaml_with_lines(text)
    assert caught.value.line == line
    assert caught.value.message.startswith("YAML aliases (*name) are not allowed")


def test_duplicate_keys_are_listed_with_their_lines() -> None:
    _, index = parse_yaml_with_lines("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert index.duplicate_keys == ((("b", "c"), 4), (("a",), 5))


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(
            "a: 1\nb: [1,\nc: 2\n", 4, "or ']' (started on line 2)", id="unclosed flow list"
        ),
        pytest.param("a: 1\n  b: 2\n", 2, "mapping values are not allowed", id="bad indent"),
        pytest.param("a: 1\n---\nb: 2\n", 2, "single document", id="two documents"),
        pytest.param("a: !!python/object:os.system x\n", 1, "could not determine", id="unsafe"),
    ],
)
def test_syntax_errors_carry_a_line(text: str, line: int, words: str) -> None:
    with pytest.raises(YamlError) as caught:
        parse_yaml_with_lines(text)
    assert caught.value.line == line
    assert words in caught.value.message


def test_empty_document_is_none() -> None:
    assert parse_yaml_with_lines("# nothing\n") == (None, parse_yaml_with_lines("")[1])
    assert parse_yaml_with_lines("")[1].line_of(("a",)) == 1


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(YamlError) as caught:
        load_yaml_with_lines(path)
    assert (caught.value.line, caught.value.message) == (2, "file is not valid UTF-8")
