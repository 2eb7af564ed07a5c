"""A gateway settings change: one restart action that hands the port over (pure plan, fakes).

The plan has no `gateway.stop` before the start (the old gateway stops only once the new one
answers, inside `GatewayControl.restart`), the action round-trips through plan JSON, and the
handler restarts (not stops) the gateway, or says when the old one had to be stopped first.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from declare.apply.events import Event, GatewayStoppedFirst
from declare.apply.handlers import start_gateway
from declare.diff import Actual, diff
from declare.plan.actions import ActionKind, StartGateway
from declare.plan.codec import action_from_json, action_to_json
from declare.ports import GatewaySettings
from declare.state.document import State
from declare.views.apply import event_text
from tests.unit.planning_fixtures import applied, desired, plan_of


def test_a_settings_change_is_one_restart_and_no_stop_before_it() -> None:
    state, actual = applied(desired(("1", 100)))
    plan = plan_of(diff([desired(("1", 100))], state, actual, "gw"), recorded="old")
    kinds = [a.kind for a in plan.actions]
    assert ActionKind.STOP_GATEWAY not in kinds
    (start,) = [a for a in plan.actions if a.kind is ActionKind.START_GATEWAY]
    assert isinstance(start.payload, StartGateway) and start.payload.replace
    assert "restart the gateway" in start.summary and "the old one drains" in start.summary
    assert action_from_json(action_to_json(start)) == start


def test_a_first_start_is_no_restart_and_an_old_plan_json_reads_as_one() -> None:
    plan = plan_of(diff([desired(("1", 100))], State(), Actual()), running=False, recorded=None)
    (start,) = [a for a in plan.actions if a.kind is ActionKind.START_GATEWAY]
    assert isinstance(start.payload, StartGateway) and not start.payload.replace
    saved = action_to_json(start)
    del saved["payload"]["replace"]  # a plan saved by a declare before the handover
    assert action_from_json(saved) == start


class _Gateway:
    def __init__(self, handed_over: bool) -> None:
        self.calls: list[str] = []
        self._handed_over = handed_over

    def start(self, settings: GatewaySettings) -> None:
        self.calls.append("start")

    def restart(self, settings: GatewaySettings) -> bool:
        self.calls.append("restart")
        return self._handed_over

    def stop(self) -> None:
        self.calls.append("stop")


def _run(replace: bool, handed_over: bool) -> tuple[list[str], list[Event]]:
    gateway = _Gateway(handed_over)
    events: list[Event] = []
    ledger = SimpleNamespace(
        record_gateway=lambda g: gateway.calls.append("record"),
        push=lambda required: gateway.calls.append("push"),
    )
    project = SimpleNamespace(
        gateway=gateway, gateway_settings=lambda: GatewaySettings("127.0.0.1", 8787)
    )
    ctx: Any = SimpleNamespace(project=project, ledger=ledger, emit=events.append)
    action: Any = SimpleNamespace(id="gateway.start", summary="restart the gateway")
    start_gateway(ctx, action, StartGateway("127.0.0.1", 8787, "gw", replace=replace))
    return gateway.calls, events


def test_the_handler_restarts_then_records_then_pushes() -> None:
    assert _run(replace=True, handed_over=True) == (["restart", "record", "push"], [])
    assert _run(replace=False, handed_over=True) == (["start", "record", "push"], [])


def test_an_old_gateway_that_cannot_hand_over_is_reported() -> None:
    calls, events = _run(replace=True, handed_over=False)
    assert calls == ["restart", "record", "push"]
    (event,) = events
    assert isinstance(event, GatewayStoppedFirst)
    assert "stopped first" in event_text(event)


def test_a_gateway_with_no_table_yet_awaits_one_for_its_first_seconds() -> None:
    from declare.gateway.state import GatewayState
    from declare.gateway.table import RoutingTable

    state = GatewayState()
    assert state.awaiting_table()  # an unknown endpoint: 503 + Retry-After, not 404
    assert not state.awaiting_table(window=0.0)  # past the window: 404
    state.set_table(RoutingTable.empty())
    assert not state.awaiting_table()  # a table came in (kept or pushed): 404
