"""The quickstart's stage scheduler (``run_stages``): each stage once, after what it reads, up to ``lanes`` side by
side, and a failed stage stops the run without starting anything else (docs/quickstart.md)."""

from __future__ import annotations

import threading
import time

import pytest


class Recorder:
    """A fake ``run(name, tagged)``: logs start/end in order with times, sleeps ``seconds`` and returns a number of
    its name. ``fail``: the stage that raises; ``wait_for``: ``{stage: other}``, the stage ends only after ``other``
    has ended (bounded), so that it is still running then."""

    def __init__(self, seconds: float = 0.02, fail: str | None = None, wait_for: dict[str, str] | None = None) -> None:
        self.seconds, self.fail, self.wait_for = seconds, fail, wait_for or {}
        self.events: list[tuple[str, str]] = []
        self.times: dict[str, list[float]] = {}
        self.tagged: list[bool] = []
        self.started = {name: threading.Event() for name in ("seed", "data")}
        self.ended = {name: threading.Event() for name in self.wait_for.values()}
        self._lock = threading.Lock()

    def _log(self, what: str, name: str) -> None:
        with self._lock:
            self.events.append((what, name))
            self.times.setdefault(name, []).append(time.monotonic())
        if what == "end" and name in self.ended:
            self.ended[name].set()

    def __call__(self, name: str, tagged: bool) -> float:
        self._log("start", name)
        self.tagged.append(tagged)
        if name in self.started:
            self.started[name].set()
            if tagged:  # side by side, the two first stages wait (bounded) until both have started
                self.started["data" if name == "seed" else "seed"].wait(timeout=10)
        time.sleep(self.seconds)
        if name in self.wait_for:
            self.ended[self.wait_for[name]].wait(timeout=10)
            time.sleep(self.seconds)
        if name == self.fail:
            self._log("end", name)
            raise RuntimeError(f"stage {name} broke")
        self._log("end", name)
        return len(name) + 0.04

    def index(self, what: str, name: str) -> int:
        return self.events.index((what, name))

    def overlaps(self) -> list[tuple[str, str]]:
        spans = {name: times for name, times in self.times.items() if len(times) == 2}
        return [
            (a, b) for a in spans for b in spans if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
        ]


@pytest.fixture(scope="module")
def quickstart(example_script):
    return example_script("quickstart")


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_every_stage_runs_once_after_its_dependencies(quickstart, lanes) -> None:
    run = Recorder()
    seconds = quickstart.run_stages(run, lanes)
    starts = [name for what, name in run.events if what == "start"]
    assert sorted(starts) == sorted(quickstart.STAGES)
    for stage in quickstart.STAGES:
        for dependency in quickstart.DEPENDENCIES[stage]:
            assert run.index("end", dependency) < run.index("start", stage), (stage, dependency, run.events)
    assert list(seconds) == list(quickstart.STAGES)
    assert seconds == {name: round(len(name) + 0.04, 1) for name in quickstart.STAGES}


def test_two_lanes_run_independent_stages_side_by_side_and_tag_them(quickstart) -> None:
    run = Recorder()
    quickstart.run_stages(run, 2)
    assert ("data", "seed") in run.overlaps()
    assert all(run.tagged) and len(run.tagged) == len(quickstart.STAGES)
    # never more than two at a time
    running, most = 0, 0
    for what, _ in run.events:
        running += 1 if what == "start" else -1
        most = max(most, running)
    assert most == 2


def test_one_lane_runs_stages_one_after_another_untagged(quickstart) -> None:
    run = Recorder()
    quickstart.run_stages(run, 1)
    assert run.overlaps() == []
    assert [what for what, _ in run.events] == ["start", "end"] * len(quickstart.STAGES)
    assert not any(run.tagged)
    # ready stages start in PRIORITY order: seed and data are both ready at first
    assert [name for what, name in run.events if what == "start"][:2] == ["seed", "data"]


def test_a_failed_stage_is_raised_after_the_running_ones_finish_and_starts_nothing_else(quickstart) -> None:
    # after seed and data, mine and judge run side by side; judge ends only once mine has failed
    run = Recorder(fail="mine", wait_for={"judge": "mine"})
    with pytest.raises(RuntimeError, match="stage mine broke"):
        try:
            quickstart.run_stages(run, 2)
        finally:
            raised = time.monotonic()
    started = {name for what, name in run.events if what == "start"}
    assert started == {"seed", "data", "mine", "judge"}
    assert ("end", "judge") in run.events and run.times["judge"][1] <= raised  # the running stage was let finish
    assert run.index("end", "mine") < run.index("end", "judge")
    dependents = {"unime_v2", "reranker", "eval_unime_v2"}
    assert not started & dependents


def test_a_failure_with_one_lane_starts_nothing_after_it(quickstart) -> None:
    run = Recorder(fail="data")
    with pytest.raises(RuntimeError, match="stage data broke"):
        quickstart.run_stages(run, 1)
    assert [name for what, name in run.events if what == "start"] == ["seed", "data"]


def test_priority_and_dependencies_cover_exactly_the_stages(quickstart) -> None:
    assert sorted(quickstart.PRIORITY) == sorted(quickstart.STAGES)
    assert len(set(quickstart.PRIORITY)) == len(quickstart.PRIORITY)
    assert set(quickstart.DEPENDENCIES) == set(quickstart.STAGES)
    assert all(set(deps) <= set(quickstart.STAGES) for deps in quickstart.DEPENDENCIES.values())
