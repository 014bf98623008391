"""Reading CPU time from /proc: the parsing, and a window's use by role."""

from __future__ import annotations

from pathlib import Path

import cpu

STAT = "1234 (python3 (x)) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 3 0 100 0 0"


def test_process_ticks_are_utime_plus_stime_after_the_command_name() -> None:
    assert cpu.process_ticks(STAT) == 290  # ")" inside the name does not shift the fields


def test_machine_ticks_split_busy_steal_and_total() -> None:
    line = "cpu  100 5 50 1000 20 3 7 11 40 0\ncpu0 1 2 3\n"
    ticks = cpu.machine_ticks(line)
    assert ticks == cpu.MachineTicks(busy=165, steal=11, total=1196)


def test_a_window_counts_each_pid_once_and_new_ones_whole() -> None:
    machine = cpu.MachineTicks(0, 0, 0)
    before = cpu.Sample({1: ("gateway", 100), 2: ("postgres", 50), 3: ("postgres", 10)}, machine)
    after = cpu.Sample(
        {1: ("gateway", 130), 2: ("postgres", 70), 4: ("postgres", 5)},
        cpu.MachineTicks(200, 3, 400),
    )
    usage = cpu.used(before, after)
    tick = cpu.TICK_MS
    assert usage.by_role == {"gateway": 30 * tick, "postgres": 25 * tick}
    assert usage.machine_busy_ms == 200 * tick
    assert usage.steal_ms == 3 * tick
    assert cpu.per_message(usage, 10) == {"gateway": round(3 * tick, 3), "postgres": 2.5 * tick}


def test_the_machine_is_sampled_from_proc(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text(STAT)
    (tmp_path / "7" / "comm").write_text("postgres\n")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "comm").write_text("kworker/R-inet_frag_wq\n")
    (tmp_path / "stat").write_text("cpu  1 2 3 4 5 6 7 8 0 0\n")
    assert cpu.server_processes(tmp_path) == {7: "postgres"}
    taken = cpu.sample(lambda: {7: "postgres", 99: "gone"}, tmp_path)
    assert taken.ticks == {7: ("postgres", 290)}
