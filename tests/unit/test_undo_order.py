"""The undo's order, on the fake provider and gateway: every routing push and every replica
stop of an apply in one sequence, checked against the rule that at no moment does the
routing send a request to a replica that is stopped (or to an entity with none). The
failures: a state write that fails with ENOSPC right after a switch (the disk filled up),
after a canary's second shift, and failures with no traffic moved at all. Seconds."""

from __future__ import annotations

import errno
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from declare.apply.events import UndoFailed, UndoStep
from declare.gateway.table import RoutingTable
from declare.model import ReplicaHandle
from declare.state import local_files
from declare.state.document import UPDATE_FAILED
from declare.state.local import STATE_FILE, TEMP_MARK
from declare.views.apply import JsonApplyView, failure_lines
from providers.fake import FakeProvider
from tests.unit.fake_world import CANARY, World, version

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "apply-events.schema.json").read_text()
)


@dataclass
class Effects:
    """Routing pushes and replica stops in the order they happened, and the rule's check."""

    log: list[tuple[str, Any]] = field(default_factory=list)
    routed: dict[str, int] = field(default_factory=dict)  # the current routes of iris
    targets: set[str] = field(default_factory=set)  # the replicas those routes reach
    stopped: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def pushed(self, table: RoutingTable) -> None:
        ep = table.endpoints.get("iris")
        routes = dict(ep.routes) if ep else {}
        reached = (
            {t.id for key, share in routes.items() if share > 0 for t in ep.entities.get(key, ())}
            if ep
            else set()
        )
        for key, share in routes.items():
            if share > 0 and ep is not None and not ep.entities.get(key):
                self.violations.append(f"{key} routed {share} % with no replica")
        if reached & self.stopped:
            self.violations.append(f"routes reach stopped {sorted(reached & self.stopped)}")
        if routes != self.routed:
            self.log.append(("route", routes))
        self.routed, self.targets = routes, reached

    def stopping(self, handle: ReplicaHandle) -> None:
        if handle.id in self.targets:
            self.violations.append(f"{handle.id} stopped while routed ({self.routed})")
        self.stopped.add(handle.id)
        self.log.append(("stop", handle.entity))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]


@pytest.fixture
def effects(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Effects]:
    seen = Effects()
    world.gateway.on_put = seen.pushed
    stop = FakeProvider.stop_replica

    def recorded_stop(self: FakeProvider, handle: ReplicaHandle, grace_seconds: float) -> None:
        seen.stopping(handle)
        stop(self, handle, grace_seconds)

    monkeypatch.setattr(FakeProvider, "stop_replica", recorded_stop)
    yield seen


@dataclass
class FullDisk:
    """From `fill()` on, every state write fails with ENOSPC while writing its temp file."""

    state_dir: Path
    full: bool = False
    good: bytes = b""  # the state file when the disk filled

    def fill(self) -> None:
        if not self.full:
            self.full = True
            self.good = (self.state_dir / STATE_FILE).read_bytes()


@pytest.fixture
def disk(world: World, monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    fault = FullDisk(world.project().config.state_dir)
    write_all = local_files.write_all

    def failing_write(fd: int, data: bytes) -> None:
        if fault.full:
            write_all(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(fd, data)

    monkeypatch.setattr(local_files, "write_all", failing_write)
    return fault


def fill_when_routed(
    world: World, effects: Effects, disk: FullDisk, entity: str, share: int
) -> None:
    """Fill the disk as soon as the gateway takes a table routing `share` % to `entity`."""

    def pushed(table: RoutingTable) -> None:
        effects.pushed(table)
        if effects.routed.get(entity) == share:
            disk.fill()

    effects.log.clear()
    world.gateway.on_put = pushed


def assert_last_good_state(world: World, disk: FullDisk) -> None:
    state_dir = disk.state_dir
    assert (state_dir / STATE_FILE).read_bytes() == disk.good
    assert not list(state_dir.glob(f".*{TEMP_MARK}*")), "a failed write left its temp file"


def test_a_state_write_failing_after_the_switch_restores_routing_before_any_stop(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    old = world.provider.alive_ids()
    fill_when_routed(world, effects, disk, "iris-2", 100)
    result = world.apply(version("2"))
    assert not result.ok
    error = result.endpoints[0].error
    assert f"cannot write the state file {disk.state_dir / STATE_FILE}" in error
    assert "No space left on device" in error
    assert effects.log == [
        ("route", {"iris-2": 100}),
        ("route", {"iris-1": 100}),  # all traffic back first, in one push
        ("stop", "iris-2"),  # then the replica that was started
    ]
    assert effects.violations == []
    assert world.routed() == {"iris-1": 100}
    assert world.provider.alive_ids() == old
    assert_last_good_state(world, disk)
    lines = failure_lines(result)
    assert "what ran before keeps serving" in "\n".join(lines)
    assert "the state file still holds" in "\n".join(lines)


def test_the_next_apply_after_the_disk_is_freed_converges(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    fill_when_routed(world, effects, disk, "iris-2", 100)
    assert not world.apply(version("2")).ok
    disk.full = False  # the disk is freed
    world.gateway.on_put = effects.pushed
    assert world.apply(version("2")).ok
    assert world.routed() == {"iris-2": 100}
    assert effects.violations == []
    world.converged(version("2"))


def test_a_state_write_failing_after_a_canary_shift_sends_all_traffic_back_first(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    world.gateway.figures = lambda ep, key, table: {"requests": 50, "errors": 0}
    fill_when_routed(world, effects, disk, "iris-2", 50)
    result = world.apply(version("2", rollout=CANARY))
    assert not result.ok and "No space left on device" in result.endpoints[0].error
    assert effects.log == [
        ("route", {"iris-1": 90, "iris-2": 10}),
        ("route", {"iris-1": 50, "iris-2": 50}),
        ("route", {"iris-1": 100}),
        ("stop", "iris-2"),
    ]
    assert effects.violations == []
    assert_last_good_state(world, disk)


def test_a_scale_up_whose_switch_is_not_recorded_takes_the_new_replica_out_first(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    old = world.provider.alive_ids()

    def pushed(table: RoutingTable) -> None:
        effects.pushed(table)
        if len(effects.targets) == 2:  # the new replica takes iris-1's traffic too
            disk.fill()

    effects.log.clear()
    world.gateway.on_put = pushed
    result = world.apply(version("1", size="Medium"))
    assert not result.ok and "No space left on device" in result.endpoints[0].error
    assert effects.violations == []
    assert effects.kinds()[-1] == "stop"
    assert world.provider.alive_ids() == old
    assert {t for t in effects.targets} == set(old)
    assert_last_good_state(world, disk)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_a_guard_trip_restores_routing_before_it_stops_the_new_replica(
    world: World, effects: Effects, step: int
) -> None:
    world.apply(version("1"))
    at = CANARY["steps"][step - 1]

    def figures(ep: str, key: str, table: RoutingTable) -> dict[str, Any] | None:
        bad = key == "iris-2" and dict(table.endpoints[ep].routes).get(key, 0) == at
        return {"requests": 50, "errors": 25 if bad else 0, "error_rate": 0.5 if bad else 0.0}

    world.gateway.figures = figures
    effects.log.clear()
    assert not world.apply(version("2", rollout=CANARY)).ok
    assert effects.kinds()[-2:] == ["route", "stop"]
    assert effects.log[-2] == ("route", {"iris-1": 100})
    assert effects.violations == []
    undone = [e.what for e in world.events if isinstance(e, UndoStep)]
    assert undone[0] == "all traffic back to what served before"
    assert world.state().endpoints["iris"].config_update == UPDATE_FAILED


def test_a_replica_that_never_got_traffic_is_stopped_with_no_routing_push(
    world: World, effects: Effects
) -> None:
    world.apply(version("1"))
    effects.log.clear()
    world.probe.fail.add("models:/iris/2")
    result = world.apply(version("2"))
    assert not result.ok
    assert effects.log == [("stop", "iris-2")]
    assert effects.violations == []
    assert "what ran before keeps serving" in "\n".join(failure_lines(result))


def test_a_replica_started_but_never_recorded_is_stopped_too(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    old = world.provider.alive_ids()
    provider_start = FakeProvider.start_replica

    def start_then_fill(self: FakeProvider, spec: Any) -> ReplicaHandle:
        handle = provider_start(self, spec)
        disk.fill()  # the write that would record it fails
        return handle

    effects.log.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FakeProvider, "start_replica", start_then_fill)
        result = world.apply(version("2"))
    assert not result.ok and "No space left on device" in result.endpoints[0].error
    assert world.provider.alive_ids() == old  # no replica left running unrecorded
    assert effects.log == [("stop", "iris-2")]
    assert_last_good_state(world, disk)


def test_routing_that_cannot_be_restored_leaves_the_new_replica_running(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    gateway = world.gateway

    def pushed(table: RoutingTable) -> None:
        effects.pushed(table)
        if effects.routed.get("iris-2") == 100:
            disk.fill()
            gateway.refuse_puts = 1  # the push that would send traffic back

    gateway.on_put = pushed
    effects.log.clear()
    result = world.apply(version("2"))
    assert not result.ok
    assert effects.violations == []
    assert "stop" not in effects.kinds()  # it still takes the traffic: not stopped
    assert any(isinstance(e, UndoFailed) and "left running" in e.error for e in world.events)
    text = "\n".join(failure_lines(result))
    assert "what ran before keeps serving" not in text
    assert "traffic could not be sent back to what ran before" in text


def test_the_json_outcome_says_where_traffic_goes_and_that_the_state_was_not_written(
    world: World, effects: Effects, disk: FullDisk
) -> None:
    world.apply(version("1"))
    fill_when_routed(world, effects, disk, "iris-2", 100)
    result = world.apply(version("2"))
    out = io.StringIO()
    JsonApplyView(out).outcome(result, False, 1.0, {})
    line = json.loads(out.getvalue().splitlines()[-1])
    assert not list(Draft202012Validator(SCHEMA).iter_errors(line))
    (endpoint,) = line["endpoints"]
    assert endpoint["serving"] == "before"
    assert "No space left on device" in endpoint["state_error"]
