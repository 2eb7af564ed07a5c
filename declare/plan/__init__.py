"""Planning: endpoint changes -> a DAG of small named actions, and its two renderings.

`actions` holds the data (Action, ActionKind, Plan), `build` the pure graph construction,
`render` the human and JSON views. Nothing here touches a provider or the gateway.
"""

from declare.plan.actions import Action, ActionKind, Plan
from declare.plan.build import GatewayInput, PlanInput, build_plan
from declare.plan.render import render_human, render_json

__all__ = [
    "Action",
    "ActionKind",
    "GatewayInput",
    "Plan",
    "PlanInput",
    "build_plan",
    "render_human",
    "render_json",
]
