"""The gateway: declare's data plane, one long-running aiohttp process per project.

It serves `POST /serving-endpoints/{name}/invocations` and the read-only Databricks management
API from a routing table that declare pushes through the admin interface. It never reads
manifests or state. See `table.py` for the routing table's shape.

Modules:
    table       the routing table (the only thing declare sends)
    limits      rate limits: the values in the table and the fixed-window counters
    balance     pure choice of served entity and replica
    metrics     per endpoint/entity request counts and latency
    config      the process's settings (GatewayConfig)
    state       the state the handlers share: the live table, in-flight counts, metrics
    responses   the Databricks-style error responses
    dataplane   invocations: limits, body checks, entity/replica choice, one retry
    upstream    the pooled client session to the replicas
    management  the read-only management API and health
    admin       the admin interface: table push/get, drain, metrics
    server      the aiohttp application: routes, auth, error mapping
    __main__    the process's command line
    client      declare's synchronous admin client
    process     start/find/stop the process
    echo        a trivial upstream for tests and benchmarks

This package's `__init__` stays import-light (no aiohttp, no httpx): it holds only the
constants that both the process and declare's side need.
"""

MAX_BODY_BYTES = 16 * 1024 * 1024  # Databricks Model Serving's request size limit
AUTH_ENV = "DECLARE_GATEWAY_AUTH_TOKEN"  # end users' bearer token, given in the environment
ADMIN_HEADER = "X-Declare-Admin-Token"

__all__ = ["ADMIN_HEADER", "AUTH_ENV", "MAX_BODY_BYTES"]
