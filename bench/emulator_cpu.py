"""The emulator's own CPU per request, as a benchmark's "Braze answering at once" stand-in.

Starts `python -m consumer.emulator` as a subprocess (once per `--src`), fires `--requests`
keep-alive POSTs of `--recipients` recipients (about 200 bytes each) at /canvas/trigger/send and
/campaigns/trigger/send from `--threads` connections, and prints the emulator process's CPU
seconds (utime + stime from /proc/<pid>/stat) per 1000 requests, and requests/s.

    python -m bench.emulator_cpu [--requests 3000] [--threads 6] [--src DIR ...] [--rounds 3]

`--src` runs the emulator from another source tree (a directory holding a `consumer/` package,
e.g. a copy of an older commit), so a before/after comparison happens in one run on one machine;
rounds alternate between the trees. Every answer must be 201, so the validation stays measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-cpu-key"
LISTENING = "braze emulator listening on "
WARMUP_REQUESTS = 200
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    user_s: float
    system_s: float
    wall_s: float
    requests: int

    @property
    def cpu_s_per_1000(self) -> float:
        return 1000 * (self.user_s + self.system_s) / self.requests

    @property
    def system_share(self) -> float:
        return self.system_s / (self.user_s + self.system_s)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s


def requests(count: int, recipients: int) -> list[tuple[str, bytes]]:
    """`count` distinct (path, body) sends, alternating Canvas and campaign sends."""
    made: list[tuple[str, bytes]] = []
    for n in range(count):
        canvas = n % 2 == 0
        properties = "context" if canvas else "trigger_properties"
        people = [
            {
                "external_user_id": f"user-{n:05d}-{i:04d}",
                properties: {
                    "order_id": f"ord-{n:06d}{i:04d}",
                    "amount": round(17.5 + (n + i) * 0.37, 2),
                    "currency": "EUR",
                    "items": i % 7 + 1,
                    "tier": ("gold", "silver", "bronze")[i % 3],
                    "country": "DE",
                    "first_order": i % 5 == 0,
                    "campaign_source": "kafka-orders-v2",
                },
            }
            for i in range(recipients)
        ]
        target = {"canvas_id": "cv-bench-1"} if canvas else {"campaign_id": "cmp-bench-1"}
        body = {**target, "recipients": people}
        path = "/canvas/trigger/send" if canvas else "/campaigns/trigger/send"
        made.append((path, json.dumps(body, separators=(",", ":")).encode()))
    return made


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the ")" that ends comm: state is fields[0], so utime (14) and stime (15) are 11, 12.
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


@contextmanager
def emulator(src: Path) -> Iterator[tuple[int, str]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    # `python -m consumer.emulator`, as a benchmark runs it; an older tree has only the CLI's.
    module = (src / "consumer/emulator/__main__.py").exists()
    launcher = ["consumer.emulator"] if module else ["consumer", "emulator"]
    process = subprocess.Popen(
        [sys.executable, "-m", *launcher, "--port", "0", "--api-key", API_KEY],
        cwd=src,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(LISTENING):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield process.pid, line[len(LISTENING) :].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def fire(url: str, work: list[tuple[str, bytes]], threads: int) -> list[int]:
    """POST every (path, body) over `threads` keep-alive connections; the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def worker(part: list[tuple[str, bytes]]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            got = [client.post(path, content=body).status_code for path, body in part]
        with lock:
            statuses.extend(got)

    workers = [
        threading.Thread(target=worker, args=(work[index::threads],)) for index in range(threads)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return statuses


def measure(src: Path, work: list[tuple[str, bytes]], threads: int) -> Result:
    """Serve `work` (after WARMUP_REQUESTS of it) with the emulator of tree `src`."""
    warmup, measured = work[:WARMUP_REQUESTS], work[WARMUP_REQUESTS:]
    with emulator(src) as (pid, url):
        fire(url, warmup, threads)  # imports, first connections, caches
        (user_before, system_before), started = cpu_seconds(pid), time.perf_counter()
        statuses = fire(url, measured, threads)
        wall_s = time.perf_counter() - started
        user_after, system_after = cpu_seconds(pid)
    wrong = {status for status in statuses if status != 201}
    if wrong or len(statuses) != len(measured):
        raise RuntimeError(f"expected {len(measured)} answers of 201, got statuses {sorted(wrong)}")
    return Result(user_after - user_before, system_after - system_before, wall_s, len(measured))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--src", type=Path, action="append", help="a tree holding consumer/ (default: this repo)"
    )
    args = parser.parse_args()
    sources: list[Path] = args.src or [REPO]
    work = requests(args.requests + WARMUP_REQUESTS, args.recipients)
    size = sum(len(body) for _, body in work) // len(work)
    print(
        f"{args.requests} requests of {args.recipients} recipients (~{size} bytes), "
        f"{args.threads} keep-alive connections, {args.rounds} round(s)"
    )
    print(f"{'source':<40} {'CPU s/1000 req':>14} {'system':>6} {'requests/s':>10}")
    results: dict[Path, list[Result]] = {src: [] for src in sources}
    for _ in range(args.rounds):
        for src in sources:  # alternated, so a noisy neighbour hurts every source alike
            result = measure(src.resolve(), work, args.threads)
            results[src].append(result)
            print(f"{src!s:<40} {row(result)}", flush=True)
    if args.rounds > 1:
        print("median of the rounds:")
        for src, done in results.items():
            middle = sorted(done, key=lambda result: result.cpu_s_per_1000)[len(done) // 2]
            print(f"{src!s:<40} {row(middle)}")
    return 0


def row(result: Result) -> str:
    return (
        f"{result.cpu_s_per_1000:>14.3f} {result.system_share:>6.0%} {result.requests_per_s:>10.0f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
