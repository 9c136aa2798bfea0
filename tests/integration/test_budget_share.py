"""One Braze budget for the whole consumer group (real broker, the emulator, `braze-consumer run`).

Three members of one group read a 7-partition topic (split 3/2/2) whose partitions hold different
backlogs, each large enough to last the measurement. Every member is given the same
`braze.requests_per_hour`, the emulator's own budget, which here is a per-second window (so the
budget is reached within seconds; its `X-RateLimit-*` headers then describe that window). Two
members start, the third joins (a rebalance), and later one leaves (another):

- over a measured stretch the emulator accepts at least 95% of its budget, and never more (it
  refuses beyond its window; its per-second counts are checked too). A few 429s happen by
  design: every second is a new window, and at its edge requests of three processes cross
  (each is retried after the reset); they stay under 4% of the budget (about 1% measured);
- the shares the members log, put on one timeline, never add up to more than 1, through every
  rebalance, and their gauges add up to 1 once the group is settled.

Real time: about 50 s (plus the session's broker). `pytest -s` prints the figures.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from consumer.emulator.control import EmulatorControl
from consumer.emulator.server import start_emulator
from tests.integration.kafka_helpers import create_topic, produce, unique_name
from tests.integration.service_helpers import (
    API_KEY,
    REPO,
    RULES_TEMPLATE,
    Scenario,
    ServiceProcess,
    free_port,
    scrape_total,
    wait_until,
)

PARTITIONS = 7  # three members: 3/2/2
PER_SECOND = 30  # the emulator's budget; every member is given PER_SECOND x 3600 an hour
BUDGET_PER_HOUR = PER_SECOND * 3600
RECIPIENTS = 5  # per request: 150 events a second, about 21 per partition
# Different loads per partition, each more than a partition's part of the budget over the test.
BACKLOG = [2_200 + 600 * p for p in range(PARTITIONS)]
WINDOW_S = 25
SHARE_LINE = "budget share: "


@dataclass
class Figures:
    """What one run measured."""

    budget: int  # requests the emulator allows over the window
    accepted: int  # requests it accepted within the window
    rejected_429: int  # 429 answers within the window
    total_429: int  # over the whole run
    busiest_second: int  # most requests accepted within one of the emulator's seconds
    per_member: dict[str, float] = field(default_factory=dict)  # requests within the window
    max_share_sum: float = math.nan  # of the logged shares, over the whole run
    final_gauges: dict[str, float] = field(default_factory=dict)
    share_changes: int = 0
    logs: str = ""

    @property
    def used(self) -> float:
        return self.accepted / self.budget

    def line(self) -> str:
        members = " ".join(f"{k}={v:.0f}" for k, v in self.per_member.items())
        return (
            f"budget={self.budget} accepted={self.accepted} used={self.used:.1%} "
            f"429_in_window={self.rejected_429} 429_total={self.total_429} "
            f"busiest_second={self.busiest_second}/{PER_SECOND} per_member[{members}] "
            f"max_share_sum={self.max_share_sum:.4f} share_changes={self.share_changes} "
            f"final_gauges={self.final_gauges}"
        )


def _backlog(bootstrap: str, topic: str) -> None:
    seq = 0
    for partition, count in enumerate(BACKLOG):
        values = []
        for _ in range(count):
            event = {"type": "user.signed_up", "data": {"user_id": f"u-{seq}", "seq": seq}}
            values.append(json.dumps(event).encode())
            seq += 1
        produce(bootstrap, topic, values, partition=partition, timeout_s=60)


def _share_timeline(logs: dict[str, Path]) -> list[tuple[float, str, float]]:
    """(epoch seconds, member, share) from each member's JSON log lines."""
    timeline = []
    for name, path in logs.items():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("message", ""))
            if not message.startswith(SHARE_LINE):
                continue
            held, _, rest = message[len(SHARE_LINE) :].partition(" of ")
            total = rest.split(" ", 1)[0]
            share = int(held) / int(total) if int(total) else 0.0
            when = datetime.fromisoformat(str(record["time"])).timestamp()
            timeline.append((when, name, share))
    return timeline


def max_share_sum(timeline: list[tuple[float, str, float]]) -> float:
    """The largest sum of the members' shares at any moment. Lines logged within the same
    millisecond are taken raises first, the order least favourable to the claim."""
    current: dict[str, float] = {}
    worst = 0.0
    for _when, name, share in sorted(timeline, key=lambda e: (e[0], -e[2])):
        current[name] = share
        worst = max(worst, sum(current.values()))
    return worst


def run_split(
    bootstrap: str,
    workdir: Path,
    *,
    requests_per_hour: int = BUDGET_PER_HOUR,
    source: Path = REPO,
) -> Figures:
    """Three members (two, then a third joins; one leaves at the end) against an emulator
    allowing PER_SECOND requests a second. `source`: the checkout whose `consumer` package runs
    (an older one measures the old behaviour)."""
    topic, dlq = unique_name("budget"), unique_name("dlq")
    create_topic(bootstrap, topic, PARTITIONS)
    create_topic(bootstrap, dlq, 1)
    rules = workdir / "rules.yaml"
    rules.write_text(RULES_TEMPLATE.format(topic=topic), encoding="utf-8")
    _backlog(bootstrap, topic)
    with start_emulator(api_keys=(API_KEY,), requests_per_second=PER_SECOND) as running:
        control = EmulatorControl(running.url)
        control.set_faults(latency_ms=(10, 40))
        scenario = Scenario(
            bootstrap, topic, unique_name("group"), dlq, rules, workdir, control, running.url
        )
        ports = {name: free_port() for name in ("a", "b", "c")}
        members: dict[str, ServiceProcess] = {}

        def start(name: str) -> None:
            config = scenario.config(
                braze__requests_per_hour=requests_per_hour,
                batching__max_recipients=RECIPIENTS,
                batching__max_wait_ms=50,
                metrics__port=ports[name],
                logging__format="json",
                # A rebalance or a stop waits this long for batches stuck behind the budget:
                # short, so the test stays short (the next owner re-sends what they held).
                shutdown__revoke_timeout_s=2,
                shutdown__drain_timeout_s=2,
            )
            members[name] = _start(config, workdir, source)

        def gauges() -> dict[str, float]:
            return {
                name: scrape_total(ports[name], "braze_consumer_budget_share")
                for name in members
                if members[name].proc.poll() is None
            }

        def requests_so_far() -> dict[str, float]:
            return {
                name: scrape_total(ports[name], "braze_consumer_requests_total") for name in members
            }

        def split_among(names: str) -> bool:
            """Every partition held, by these members, each sending."""
            sending = all(requests_so_far()[name] > 0 for name in names)
            if source != REPO:  # an older service exports no share: sending must do
                return sending
            shares = gauges()
            held = all(shares.get(name, 0) > 0 for name in names)
            return sending and held and abs(sum(shares.values()) - 1.0) < 1e-9

        try:
            start("a")
            start("b")
            wait_until(lambda: split_among("ab"), 40, "a and b splitting the partitions")
            start("c")
            wait_until(lambda: split_among("abc"), 40, "a, b and c splitting the partitions")
            time.sleep(3)  # c's batches reach their steady pace
            start_s = math.ceil(time.time())  # whole seconds: the emulator's windows
            before = requests_so_far()
            time.sleep(start_s + WINDOW_S - time.time())
            after = requests_so_far()
            settled = gauges()
            members["c"].signal(signal.SIGTERM)  # one member leaves: another rebalance
            members["c"].wait(60)
            wait_until(lambda: split_among("ab"), 40, "a and b holding every partition again")
            for name in ("a", "b"):
                members[name].signal(signal.SIGTERM)
            for name in ("a", "b"):
                members[name].wait(60)
        finally:
            for member in members.values():
                member.ensure_stopped()
        calls = [r for r in control.requests() if r.path == "/canvas/trigger/send"]
    end_s = start_s + WINDOW_S
    within = [r for r in calls if start_s <= r.time_epoch_s < end_s]
    accepted = [r for r in calls if r.status is not None and 200 <= r.status < 300]
    seconds = Counter(int(r.time_epoch_s) for r in accepted)
    timeline = _share_timeline({name: m.log_path for name, m in members.items()})
    return Figures(
        budget=PER_SECOND * WINDOW_S,
        accepted=sum(1 for r in within if r.status is not None and 200 <= r.status < 300),
        rejected_429=sum(1 for r in within if r.status == 429),
        total_429=sum(1 for r in calls if r.status == 429),
        busiest_second=max(seconds.values(), default=0),
        per_member={name: after[name] - before[name] for name in members},
        max_share_sum=max_share_sum(timeline) if timeline else math.nan,
        final_gauges=settled,
        share_changes=len(timeline),
        logs="\n".join(m.log() for m in members.values()),
    )


def _start(config: Path, workdir: Path, source: Path) -> ServiceProcess:
    if source == REPO:
        return ServiceProcess.start(config, workdir, None)
    # An older checkout: run its package instead (`python -m` puts the working directory first).
    log_path = workdir / f"service-{unique_name('log')}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")}
    env["BRAZE_API_KEY"] = API_KEY
    args = [sys.executable, "-m", "consumer", "run", "--config", str(config)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)
    return ServiceProcess(proc, log_path)


def test_three_members_share_one_budget_through_rebalances(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    figures = run_split(kafka_bootstrap, tmp_path)
    print()
    print(figures.line())
    logs = figures.logs
    # The emulator never lets more than its budget through: check its own count anyway.
    assert figures.busiest_second <= PER_SECOND, logs
    assert figures.accepted <= figures.budget, logs
    # Together the members use (nearly) all of it: each spends the share of its partitions.
    assert figures.accepted >= 0.95 * figures.budget, figures.line()
    # Pacing on the workspace's remainder keeps 429s rare (a per-second window is reached at
    # every edge, where requests of three processes cross; a 429 is retried after the reset).
    assert figures.rejected_429 <= 0.04 * figures.budget, figures.line()
    # Joins and leaves: 0 at start, then every rebalance of every member was logged.
    assert figures.share_changes >= 8, logs
    assert figures.max_share_sum <= 1.0 + 1e-9, figures.line()
    assert sorted(figures.final_gauges.values()) == pytest.approx([2 / 7, 2 / 7, 3 / 7]), logs
