"""Planning: endpoint changes -> a DAG of small named actions with typed payloads.

`actions` holds the data (Action, its payload types, ActionKind, Plan), `build` the pure graph
construction, `codec` the JSON form of changes and actions, `saved` saved-plan files and
their staleness. Nothing here touches a provider or the gateway; the renderings of a plan are
`declare.views`'.
"""

from declare.plan.actions import Action, ActionKind, Plan
from declare.plan.build import GatewayInput, PlanInput, RuntimeInput, build_plan

__all__ = [
    "Action",
    "ActionKind",
    "GatewayInput",
    "Plan",
    "PlanInput",
    "RuntimeInput",
    "build_plan",
]
