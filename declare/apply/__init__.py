"""Apply: carry a plan out through the project's providers and gateway.

executor   walks the plan's DAG, folds each outcome into the endpoint's progress
handlers   what each action kind does (a typed registry, one payload type each)
ledger     the one writer of the state and of the routing table
rollback   undoes a failed endpoint's finished actions
progress   an endpoint's apply so far, as an immutable value
events     what an apply reports (to hooks: the views) and its result
context    what the handlers act through

result = Executor(project, plan, state, hooks=view, parallelism=10).run()
"""

from declare.apply.events import ApplyResult, EndpointOutcome, Event, Hooks
from declare.apply.executor import Executor

__all__ = ["ApplyResult", "EndpointOutcome", "Event", "Executor", "Hooks"]
