"""declare: Terraform-style deployment of ML model serving endpoints.

Stages, each its own module or package, imports running one way:
cli -> apply/plan -> diff/state/manifests/resolve -> dag, model, errors.
Providers (`providers/`) and the gateway (`declare.gateway`) depend only on the core's data
types (`declare.model`, `declare.provider`, `declare.errors`, `declare.procs`).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
