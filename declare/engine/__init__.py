"""The stage pipeline: load -> validate -> resolve -> refresh -> diff -> build the plan.

One function, `make_plan`, called by `declare plan`, `apply`, `destroy`, `graph`, and by the
runtime between applies; `saved_plan` reads a saved plan back and refuses it when the world
moved on. The pure stages are `declare.diff` and `declare.plan`; this package does the
reading (manifests, MLflow, providers, the gateway) through the project's boundaries.
Executing a plan is `declare.apply`.

    desired    manifests -> validated, resolved DesiredEndpoints
    refresh    what really runs: replica liveness, orphans, the gateway and its table
    pipeline   make_plan, plan_for (from given desired endpoints), saved_plan
"""

from declare.engine.desired import check_providers, check_secrets, load_desired, resolve
from declare.engine.pipeline import PlanOptions, Proposal, make_plan, plan_for, saved_plan
from declare.engine.refresh import builds, refresh

__all__ = [
    "PlanOptions",
    "Proposal",
    "builds",
    "check_providers",
    "check_secrets",
    "load_desired",
    "make_plan",
    "plan_for",
    "refresh",
    "resolve",
    "saved_plan",
]
