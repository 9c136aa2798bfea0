"""Wall time and peak memory of `braze-consumer rules check` on hostile rule files.

Run from the repository root: python bench/hostile_yaml.py [--source DIR] [--timeout S]

Each input is checked by a fresh `python -m consumer rules check FILE` process. `--source` picks
the code under test (default: this checkout), so the same inputs can measure an older tree, e.g.
one unpacked with `git archive HEAD | tar -x -C /tmp/before-src`. Every process runs under an
address-space cap (`--memory-gib`, like `ulimit -v`) and is killed after `--timeout` seconds, so
an alias bomb on code without limits reports "did not finish" instead of swapping the machine.
Peak RSS comes from GNU `/usr/bin/time -v` when present, else from `os.wait4`'s rusage.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
GNU_TIME = "/usr/bin/time"
MIB = 1 << 20

RULE = """\
rules:
  - id: hostile
    topics: [t]
    canvas: {id: c}
    recipient: {external_user_id: "{{ user }}"}
"""


@dataclass(frozen=True)
class Outcome:
    """How one `rules check` run ended."""

    exit: str  # exit code, or the signal that ended it
    seconds: float
    peak_rss: str  # MiB; ">=N" when killed first: the highest of the samples taken meanwhile
    output: str  # the first output line, and how many lines there were


# ----- the hostile inputs ------------------------------------------------------------------


def alias_bomb() -> str:
    """Nine levels of nine aliases ("billion laughs"): 9**9 strings once expanded."""
    levels = "abcdefghi"
    lines = [RULE, "    properties:\n", f"      a: &a [{','.join(['lol'] * 9)}]\n"]
    for previous, name in itertools.pairwise(levels):
        lines.append(f"      {name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n")
    return "".join(lines)


def flow_nesting(depth: int) -> str:
    return f"rules: {'[' * depth}{']' * depth}\n"


def block_nesting(depth: int) -> str:
    return f"rules:\n{'- ' * depth}x\n"


def many_rules(size: int) -> str:
    """The example rules file repeated (ids made unique) until it is `size` bytes: all valid."""
    example = (REPO / "config" / "rules.yaml").read_text(encoding="utf-8")
    body = example.split("\nrules:\n", 1)[1]
    parts, total = ["rules:\n"], len("rules:\n")
    for copy in itertools.count():
        if total >= size:
            break
        chunk = re.sub(r"(  - id: )(\S+)", rf"\g<1>\g<2>-{copy}", body)
        parts.append(chunk)
        total += len(chunk.encode())
    return "".join(parts)


def dense_values(size: int) -> str:
    """A flow list of empty lists under the 10 MiB limit: millions of values, nothing else."""
    head, tail = "rules: [", "[]]\n"
    return head + "[]," * ((size - len(head) - len(tail)) // 3) + tail


INPUTS: dict[str, Callable[[], str]] = {
    "alias bomb": alias_bomb,
    "flow nesting 100,000": lambda: flow_nesting(100_000),
    "block nesting 100,000": lambda: block_nesting(100_000),
    "flow nesting 1,000": lambda: flow_nesting(1_000),
    "50 MB of valid rules": lambda: many_rules(50_000_000),
    "9 MB of valid rules": lambda: many_rules(9_000_000),
    "10 MiB of empty lists": lambda: dense_values(10 * MIB - 1),
}


# ----- running one check -------------------------------------------------------------------


def run_check(source: Path, python: str, file: Path, timeout: float, memory: int) -> Outcome:
    """`rules check FILE` with `source` first on the path; output goes to a file, not memory."""
    wrapper = [GNU_TIME, "-v"] if Path(GNU_TIME).exists() else []
    command = [*wrapper, python, "-m", "consumer", "rules", "check", str(file)]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=source,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own group, so the kill reaches the child of `time`
            preexec_fn=lambda: _cap_memory(memory),  # noqa: PLW1509 (no threads here)
        )
        status, usage, sampled = _wait(process, timeout)
        seconds = time.monotonic() - started
        stdout, stderr = _read(out), _read(err)
    if status is None:
        peak = f">={sampled:.0f}" if sampled else "-"
        return Outcome("killed", seconds, peak, f"did not finish in {timeout:.0f} s")
    reported = _gnu_time_peak(stderr) if wrapper else usage.ru_maxrss / 1024
    peak = f"{reported:.0f}" if reported is not None else "-"
    summary = _summary(stdout, stderr).replace(str(file), "FILE")
    return Outcome(_exit(status, stderr), seconds, peak, summary)


def _cap_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _wait(
    process: subprocess.Popen[bytes], timeout: float
) -> tuple[int | None, resource.struct_rusage, float]:
    """Its wait status (`None` if killed at the timeout), rusage, and its sampled peak RSS.

    A killed process never reports its peak, so the group's peak is sampled once a second.
    """
    deadline = time.monotonic() + timeout
    sampled, next_sample = 0.0, time.monotonic() + 1
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage, sampled
        if time.monotonic() >= next_sample:
            sampled, next_sample = max(sampled, _group_peak_mib(process.pid)), next_sample + 1
        time.sleep(0.05)
    sampled = max(sampled, _group_peak_mib(process.pid))
    os.killpg(process.pid, signal.SIGKILL)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = -signal.SIGKILL
    return None, usage, sampled


def _group_peak_mib(group: int) -> float:
    """The largest peak RSS (VmHWM) among the live processes of a process group (Linux /proc)."""
    peak = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the `(command)`, which may hold spaces: state, ppid, pgrp, ...
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        if found:
            peak = max(peak, int(found.group(1)) / 1024)
    return peak


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode("utf-8", "replace")


def _exit(status: int, stderr: str) -> str:
    """`1`, or `SIGSEGV` when a signal ended it (GNU time reports its child's signal)."""
    found = re.search(r"Command terminated by signal (\d+)", stderr)
    code = -int(found.group(1)) if found else os.waitstatus_to_exitcode(status)
    return signal.Signals(-code).name if code < 0 else str(code)


def _gnu_time_peak(stderr: str) -> float | None:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(found.group(1)) / 1024 if found else None


def _summary(stdout: str, stderr: str) -> str:
    """The first line that says what happened, plus how many problem lines there were."""
    lines = stdout.splitlines()
    errors = [line for line in stderr.splitlines() if line and not line.startswith("\t")]
    tail = [line for line in errors if "Error" in line or "error" in line][-1:]
    first = lines[0] if lines else (tail[0] if tail else (errors[0] if errors else ""))
    traceback = " [Traceback]" if "Traceback" in stderr else ""
    more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    return f"{first[:110]}{more}{traceback}"


# ----- the table ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="rules check on hostile YAML: time and memory")
    parser.add_argument("--source", type=Path, default=REPO, help="tree whose code is measured")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run it with")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a kill")
    parser.add_argument("--memory-gib", type=float, default=4.0, help="address-space cap")
    parser.add_argument("--only", action="append", choices=list(INPUTS), help="one input")
    args = parser.parse_args()
    memory = int(args.memory_gib * (1 << 30))
    print(
        f"code under test: {args.source.resolve()}  (timeout {args.timeout:.0f} s, "
        f"memory cap {args.memory_gib:g} GiB, peak RSS from "
        f"{'/usr/bin/time -v' if Path(GNU_TIME).exists() else 'wait4 rusage'})"
    )
    print(f"{'input':<24}{'bytes':>12}{'exit':>9}{'wall s':>9}{'peak MiB':>10}  outcome")
    with tempfile.TemporaryDirectory(prefix="hostile-yaml-") as folder:
        for name in args.only or list(INPUTS):
            file = Path(folder) / "rules.yaml"
            file.write_text(INPUTS[name](), encoding="utf-8")
            outcome = run_check(args.source, args.python, file, args.timeout, memory)
            print(_row(name, file.stat().st_size, outcome), flush=True)
            file.unlink()
    return 0


def _row(name: str, size: int, outcome: Outcome) -> str:
    numbers = f"{size:>12,}{outcome.exit:>9}{outcome.seconds:>9.1f}{outcome.peak_rss:>10}"
    return f"{name:<24}{numbers}  {outcome.output}"


if __name__ == "__main__":
    raise SystemExit(main())
