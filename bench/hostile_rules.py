"""CPU time and peak memory of one event's evaluation under the most hostile rules and events.

Run from the repository root: python bench/hostile_rules.py [--source DIR] [--timeout S]

Each case (a rule and an event) runs in a fresh process that imports the rules code from
`--source` (default: this checkout), so the same cases can measure an older tree, e.g. one
unpacked with `git archive HEAD | tar -x -C /tmp/before-rules`. A case is measured twice, in two
processes: CPU time of `RulesTable.evaluate` (best of a few runs when fast), then peak traced
memory (tracemalloc) of one run. Every process is killed after `--timeout` seconds ("> 60 s") and
runs under an address-space cap (`--memory-gib`), so a blow-up reports instead of swapping.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1_000_000
NOW_MS = 1_714_558_000_000

RULE = """\
rules:
  - id: hostile
    topics: [t]
{when}    canvas: {{id: c}}
    recipient: {{external_user_id: u}}
{properties}"""

DOUBLING = "[@, @][] | "  # the issue's expression: each step doubles its input
ISSUE_PATTERN = r"^([a-z0-9]+)+@example\.com$"
# The costliest pattern found under RE2's 2,000-instruction cap: its DFA cannot cache the states
# a random a/b text walks through, so RE2 simulates the whole program at each byte.
RE2_WORST = "[ab]*a(?:[ab][ab]?){600}c"


def zeros(size: int) -> object:
    """The most values per byte: `[0,0,...]` of `size` bytes."""
    return {"items": [0] * (size // 2)}


def floats(size: int) -> object:
    return {"items": [1e308] * (size // 6)}  # `1e308,`: floor() makes 309 digits of each


def emoji(size: int) -> object:
    return {"items": [["😀" * 100]] * (size // 406)}  # to_string escapes each as 12 characters


def nested(size: int) -> object:
    return {"items": [[[0]]] * (size // 8)}


def objects(size: int) -> object:
    return {"items": [{"x": 1}] * (size // 8)}


def text(body: str) -> Callable[[int], object]:
    return lambda size: {"email": body}


def random_ab(size: int) -> object:
    generator = random.Random(1)
    return {"email": "".join(generator.choice("ab") for _ in range(size))}


@dataclass(frozen=True)
class Case:
    name: str
    when: str  # a `matches` pattern for data.email, or ""
    expression: str  # a `{{ }}` property, or ""
    event: Callable[[int], object]
    size: int  # target bytes of the event's `data`


CASES = [
    Case("issue regex, 40 a's + '!'", ISSUE_PATTERN, "", text("a" * 40 + "!"), 41),
    Case("issue regex, 1 MB of a's + '!'", ISSUE_PATTERN, "", text("a" * MB + "!"), MB),
    Case("worst RE2 pattern, 1 MB a/b text", RE2_WORST, "", random_ab, MB),
    Case("issue JMESPath, 28 doublings", "", DOUBLING * 28 + "@", text("x"), 10),
    Case("800 nested parentheses", "", "(" * 800 + "data" + ")" * 800, zeros, 100),
    Case("baseline: field chain, 1 MB", "", "data.items", objects, MB),
    Case("baseline: projection, 1 MB", "", "data.items[*].x", objects, MB),
    Case("baseline: projection, 1 MB zeros", "", "data.items[*].x", zeros, MB),
    Case("deepest allowed: 15 flattens", "", "data.items" + "[]" * 15, nested, MB),
    Case("most doubling: 5 steps", "", "data.items | " + DOUBLING * 5 + "@", zeros, MB),
    Case("most references: 64", "", "data.items" + " | [@, @]" * 6, zeros, MB),
    Case(
        "most hashes: 7 per element",
        "",
        "data.items[*].[" + ",".join(["{a: @}"] * 7) + "]",
        zeros,
        MB,
    ),
    Case(
        "most visits: 17-clause filter",
        "",
        "data.items[?" + " && ".join(["@ == `0`"] * 17) + "]",
        zeros,
        MB,
    ),
    Case("most sorting: 5 sorts", "", "[" + ", ".join(["sort(data.items)"] * 5) + "]", zeros, MB),
    Case("most digits: floor of 1e308s", "", "data.items[*].floor(@)", floats, MB),
    Case("most escaping: to_string", "", "to_string(data)", emoji, MB),
    Case(
        "hash of 4 keys, 1 MB zeros",
        "",
        "data.items[*].{sku: sku, name: name, price: price, qty: qty}",
        zeros,
        MB,
    ),
]


def rules_text(case: Case) -> str:
    when = (
        f"    when:\n      data.email: {{matches: {json.dumps(case.when)}}}\n" if case.when else ""
    )
    template = json.dumps("{{ " + case.expression + " }}")
    properties = f"    properties: {{p: {template}}}\n" if case.expression else ""
    return RULE.format(when=when, properties=properties)


# --- the child: one case, one measurement ------------------------------------------------------


def child(case: Case, measure: str) -> dict[str, object]:
    """Loads the rule and evaluates the event with the code on sys.path; a JSON-able report."""
    # Imported here, after main() put --source first on sys.path: the code under test.
    from consumer.events import Event, KafkaMeta, RawMessage, decode  # noqa: PLC0415
    from consumer.rules import load_rules_text  # noqa: PLC0415

    try:
        table = load_rules_text(rules_text(case))
    except Exception as exc:  # RulesError, or whatever the code under test let escape
        first = str(exc).splitlines()[0] if str(exc) else ""
        return {"outcome": f"load: {type(exc).__name__}: {first}"}
    document = {"data": case.event(case.size)}
    raw = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    decoded = decode(RawMessage(KafkaMeta("t", 0, 0, timestamp_ms=NOW_MS), raw))
    assert isinstance(decoded, Event)
    if measure == "memory":
        return {"peak": _peak_bytes(lambda: table.evaluate(decoded, NOW_MS)), "bytes": len(raw)}
    outcomes, seconds = _cpu_seconds(lambda: table.evaluate(decoded, NOW_MS))
    return {"outcome": _describe(outcomes), "cpu": seconds, "bytes": len(raw)}


def _cpu_seconds(run: Callable[[], Sequence[object]]) -> tuple[Sequence[object], float]:
    """Best CPU time of a few runs when one is quick; of one run otherwise."""
    best, spent, runs = float("inf"), 0.0, 0
    outcomes: Sequence[object] = []
    while runs < 1 or (spent < 0.5 and runs < 200):
        started = time.process_time()
        outcomes = run()
        took = time.process_time() - started
        best, spent, runs = min(best, took), spent + took, runs + 1
    return outcomes, best


def _peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _describe(outcomes: Sequence[object]) -> str:
    if not outcomes:
        return "no match"
    outcome = outcomes[0]
    kind = type(outcome).__name__
    reason = getattr(outcome, "reason", None)
    message = str(getattr(outcome, "message", ""))
    return f"{kind} {reason}: {message[:70]}" if reason is not None else kind


# --- the parent: every case, before or after ---------------------------------------------------


def run_case(index: int, measure: str, args: argparse.Namespace) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", str(index), "--measure", measure]
    command += ["--source", str(args.source), "--memory-gib", str(args.memory_gib)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"crash": last[:90]}
    report: dict[str, object] = json.loads(lines[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=REPO)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--memory-gib", type=float, default=4.0)
    parser.add_argument("--only", help="run the cases whose name contains this text")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        cap = int(args.memory_gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        sys.path.insert(0, str(args.source.resolve()))
        print(json.dumps(child(CASES[args.child], args.measure)))
        return
    limit = f"> {args.timeout:.0f} s"
    print(f"code: {args.source}   (one event per row; killed after {args.timeout:.0f} s)")
    print(f"{'case':<36} {'event':>9} {'CPU':>10} {'peak mem':>10}  outcome")
    for index, case in enumerate(CASES):
        if args.only and args.only not in case.name:
            continue
        cpu = run_case(index, "cpu", args)
        memory = run_case(index, "memory", args) if "cpu" in cpu else {}
        print(
            f"{case.name:<36} {_size(cpu.get('bytes'))} {_cpu(cpu, limit):>10}"
            f" {_memory(memory, limit):>10}  {_outcome(cpu)}",
            flush=True,
        )


def _size(count: object) -> str:
    if not isinstance(count, int):
        return f"{'':>9}"
    return f"{count / MB:7.2f}MB" if count >= 10_000 else f"{count:8}B"


def _cpu(report: dict[str, object], limit: str) -> str:
    seconds = report.get("cpu")
    if isinstance(seconds, float):
        return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:,.0f} ms"
    return limit if report.get("timeout") else "-"


def _memory(report: dict[str, object], limit: str) -> str:
    peak = report.get("peak")
    if isinstance(peak, int):
        return f"{peak / MB:.2f} MB" if peak < 10 * MB else f"{peak / MB:,.0f} MB"
    return limit if report.get("timeout") else "-"


def _outcome(report: dict[str, object]) -> str:
    if report.get("timeout"):
        return "(killed: still running)"
    if "crash" in report:
        return f"crashed: {report['crash']}"
    return str(report.get("outcome", ""))


if __name__ == "__main__":
    main()
