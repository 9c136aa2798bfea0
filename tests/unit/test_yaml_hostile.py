"""Hostile rules and settings files: each gives `file:line:` errors, never a hang or a crash.

An alias bomb, nesting 100,000 deep, an oversized file, binary garbage... used to grow past
2.8 GB, kill the C loader with a segfault or print a traceback. The command-line cases run
`braze-consumer rules check` as a process, so a segfault or runaway memory shows up as a failed
process instead of taking pytest down with it.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.settings import SettingsError, load_settings
from consumer.yaml_lines import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    YamlError,
    YamlLimitError,
    load_yaml_with_lines,
    parse_yaml_with_lines,
)

REPO = Path(__file__).resolve().parents[2]

RULE = """\
rules:
  - id: hostile
    topics: [t]
    canvas: {id: c}
    recipient: {external_user_id: "{{ user }}"}
"""


def alias_bomb() -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded."""
    levels = "abcdefghi"
    lines = [RULE, "    properties:\n", f"      a: &a [{','.join(['lol'] * 9)}]\n"]
    for previous, name in itertools.pairwise(levels):
        lines.append(f"      {name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n")
    return "".join(lines)


def flow_nesting(depth: int) -> str:
    return f"rules: {'[' * depth}{']' * depth}\n"


def block_list_nesting(depth: int) -> str:
    """`- - - x`: one block sequence inside the next, all on one line."""
    return f"rules:\n{'- ' * depth}x\n"


def block_mapping_nesting(depth: int) -> str:
    """One key per line, each indented one more space than the last; the last one has a value."""
    keys = "".join(f"{' ' * level}k:\n" for level in range(1, depth))
    return f"rules:\n{keys}{' ' * depth}k: x\n"


def padded_to(size: int, text: str = RULE) -> bytes:
    """`text` plus a comment line that makes the file exactly `size` bytes."""
    head = text.encode() + b"#"
    return head + b"x" * (size - len(head) - 1) + b"\n"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """`braze-consumer rules check PATH` in its own process (a segfault fails only the test)."""
    return subprocess.run(
        [sys.executable, "-m", "consumer", "rules", "check", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # generous: these finish in well under a second; the old code never did
        check=False,
    )


def expect_one_problem(
    done: subprocess.CompletedProcess[str], path: Path, line: int, words: str
) -> None:
    """Exit 1 and exactly one `file:line: -: message` line naming the problem; no traceback."""
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()], done.stdout
    prefix = f"{path}:{line}: -: "
    assert done.stdout.startswith(prefix), done.stdout
    assert words in done.stdout
    assert done.stderr.strip() == "1 problem(s) found"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(alias_bomb(), 8, "YAML aliases (*name) are not allowed", id="alias bomb"),
        pytest.param(flow_nesting(100_000), 1, "nested more than 64 levels", id="flow 100000"),
        pytest.param(flow_nesting(1_000), 1, "nested more than 64 levels", id="flow 1000"),
        pytest.param(
            block_list_nesting(100_000), 2, "nested more than 64 levels", id="block 100000"
        ),
        pytest.param(block_list_nesting(1_000), 2, "nested more than 64 levels", id="block 1000"),
        pytest.param(
            block_mapping_nesting(1_000), 65, "nested more than 64 levels", id="block map 1000"
        ),
    ],
)
def test_hostile_structure_is_one_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    expect_one_problem(check(path), path, line, words)


def test_alias_bomb_is_small() -> None:
    """The bomb really is a few hundred bytes (the reported one was 479)."""
    assert len(alias_bomb().encode()) < 600


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(padded_to(DEFAULT_MAX_BYTES + 1))
    expect_one_problem(check(path), path, 1, "file is larger than 10 MiB (10485760 bytes)")


def test_file_exactly_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(padded_to(DEFAULT_MAX_BYTES))
    assert path.stat().st_size == DEFAULT_MAX_BYTES
    done = check(path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 1 rule in 1 file\n", "")


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(random.Random(7).randbytes(4096))
    expect_one_problem(check(path), path, 1, "file is not valid UTF-8")


def test_binary_that_happens_to_be_utf8(tmp_path: Path) -> None:
    """NUL and other control characters: YAML refuses them; the line is where the first one is."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(RULE.encode() + b"    \x00\x01\x02\x7f\n")
    expect_one_problem(check(path), path, 6, "character U+0000 is not allowed in YAML")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(RULE.encode().replace(b"canvas: {id: c}", b"canvas: {id: caf\xe9}"))
    expect_one_problem(check(path), path, 4, "file is not valid UTF-8")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """Windows editors write a BOM; YAML allows one at the start, and lines keep their numbers."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + RULE.encode())
    done = check(path)
    assert (done.returncode, done.stdout) == (0, "ok: 1 rule in 1 file\n")


def test_utf8_bom_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + RULE.encode() + b"    topics: [again]\n")
    done = check(path)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 1
    assert done.stdout.startswith(f"{path}:6: hostile: duplicate key `topics`"), done.stdout


def test_deep_parentheses_in_an_expression_stay_one_string() -> None:
    """800 nested parentheses are JMESPath's problem; YAML hands them over as a plain string."""
    expression = "{{ " + "(" * 800 + "user" + ")" * 800 + " }}"
    data, index = parse_yaml_with_lines(f'recipient:\n  external_user_id: "{expression}"\n')
    assert data == {"recipient": {"external_user_id": expression}}
    assert index.line_of(("recipient", "external_user_id")) == 2


def test_settings_file_gets_the_same_limits(tmp_path: Path) -> None:
    """The settings loader shares `load_yaml_with_lines`, so a bomb there is one line too."""
    path = tmp_path / "consumer.yaml"
    path.write_text("kafka: &k {bootstrap_servers: x}\nbraze: *k\n", encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ={})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:2: YAML aliases (*name) are not allowed")


@pytest.mark.parametrize(
    "make", [flow_nesting, block_list_nesting, block_mapping_nesting], ids=lambda f: f.__name__
)
def test_nesting_up_to_the_limit_loads(make: Callable[[int], str]) -> None:
    """`rules:` plus 63 levels is 64 levels: allowed; one more is refused."""
    parse_yaml_with_lines(make(DEFAULT_MAX_DEPTH - 1))
    with pytest.raises(YamlLimitError, match="nested more than 64 levels"):
        parse_yaml_with_lines(make(DEFAULT_MAX_DEPTH))


def test_node_budget() -> None:
    text = "[" + ",".join(["x"] * 9) + "]"  # ten values: the list and nine scalars
    assert parse_yaml_with_lines(text, max_nodes=10)[0] == ["x"] * 9
    with pytest.raises(YamlLimitError, match="more than 9 values"):
        parse_yaml_with_lines(text, max_nodes=9)


def test_size_limit_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_bytes(b"a: 1\n")
    assert load_yaml_with_lines(path, max_bytes=5)[0] == {"a": 1}
    with pytest.raises(YamlLimitError, match=r"larger than 4 bytes") as caught:
        load_yaml_with_lines(path, max_bytes=4)
    assert caught.value.line == 1


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_is_not_read_to_the_end() -> None:
    """Only `max_bytes + 1` bytes are read, so even a file with no end is refused at once."""
    with pytest.raises(YamlLimitError, match="larger than 1 KiB"):
        load_yaml_with_lines("/dev/zero", max_bytes=1024)


@pytest.mark.parametrize(
    "limits",
    [{"max_depth": 0}, {"max_depth": 10_000}, {"max_nodes": 0}],
    ids=["depth 0", "depth beyond recursion", "no nodes"],
)
def test_limits_that_cannot_work_are_programming_errors(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        parse_yaml_with_lines("a: 1\n", **limits)


# Characters that mean something to YAML, a few it refuses, and plain ones.
YAML_CHARS = [*"[]{}:-,&*!|>'\"#?%@` \n\tabx01", "\x00", "\ufeff", "\x85", "é", "\u2028"]


@st.composite
def yamlish(draw: st.DrawFn) -> str:
    """Random YAML-ish text, sometimes wrapped in deep nesting or sprinkled with aliases."""
    body = draw(st.text(alphabet=st.sampled_from(YAML_CHARS), max_size=200))
    depth = draw(st.sampled_from([0, 0, 1, 63, 64, 65, 500]))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
    text = opener * depth + body + closer * depth
    if draw(st.booleans()):
        text = f"x: &x [{text}]\ny: [*x, *x]\n"
    return text


@settings(max_examples=100, deadline=None)
@given(text=yamlish(), max_depth=st.integers(1, 100), max_nodes=st.integers(1, 1000))
def test_random_text_loads_or_raises_yaml_error(text: str, max_depth: int, max_nodes: int) -> None:
    try:
        parse_yaml_with_lines(text, max_depth=max_depth, max_nodes=max_nodes)
    except YamlError as exc:
        expect_one_line(exc)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes_load_or_raise_yaml_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "random.yaml"
    path.write_bytes(raw)
    try:
        load_yaml_with_lines(path, max_bytes=200)
    except YamlError as exc:
        expect_one_line(exc)


def expect_one_line(error: YamlError) -> None:
    """What `file:line: message` needs: a real line number and a message of one line."""
    assert error.line >= 1
    assert len(error.message.splitlines()) == 1
