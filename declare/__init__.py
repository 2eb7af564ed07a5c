"""declare: Terraform-style deployment of ML model serving endpoints.

Stages, each its own module or package, imports running one way (import-linter contracts
in pyproject.toml):
cli -> commands -> views -> engine | apply -> project -> plan -> diff -> state/manifests ->
model -> errors, dag, procs. Providers (`providers/`) and the gateway (`declare.gateway`)
depend only on the core's values (`declare.model`, `declare.provider`, `declare.errors`,
`declare.procs`).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
