"""The gateway: declare's data plane, one long-running aiohttp process per project.

It serves `POST /serving-endpoints/{name}/invocations` and the read-only Databricks management
API from a routing table that declare (and the runtime that heals and autoscales endpoints)
pushes through the admin interface, which also reports demand per served entity. It never
reads manifests or state. See `table.py` for the routing table's shape.

Modules:
    table       the routing table (the only thing declare sends)
    limits      rate limits: the values in the table and the fixed-window counters
    balance     pure choice of served entity and replica
    metrics     per endpoint/entity request counts and latency
    demand      per entity inflight/held/peak/last request, and the runtime's long poll
    eject       passive ejection: unreachable replicas skipped for `eject_seconds`
    config      the process's settings (GatewayConfig)
    state       the state the handlers share: the live table, in-flight counts, demand,
                ejections, metrics
    responses   the Databricks-style error responses
    hold        requests held for a replica instead of 503 (endpoint `hold_seconds`)
    capture/    inference tables: the bounded buffer of captured requests and the thread
                that appends them to Delta tables (endpoint `capture`)
    dataplane   invocations: limits, body checks, entity/replica choice, one retry, hold
    upstream    the pooled client session to the replicas
    management  the read-only management API and health
    served_logs a served model's logs and build logs (Databricks' `logs`, `build_logs`)
    logread     reading a log where the table says it is: a file, a Docker engine's API
    admin       the admin interface: table push/get, drain, metrics, demand
    server      the aiohttp application: routes, auth, error mapping
    protocol    below the application: aiohttp's parser errors as JSON, the head timeout
    __main__    the process's command line
    client      the synchronous admin client (declare's apply, the runtime)
    process     start/find/stop the process
    echo        a trivial upstream for tests and benchmarks

This package's `__init__` stays import-light (no aiohttp, no httpx): it holds only the
constants that both the process and declare's side need.
"""

MAX_BODY_BYTES = 16 * 1024 * 1024  # Databricks Model Serving's request size limit
AUTH_ENV = "DECLARE_GATEWAY_AUTH_TOKEN"  # end users' bearer token, given in the environment
ADMIN_HEADER = "X-Declare-Admin-Token"

__all__ = ["ADMIN_HEADER", "AUTH_ENV", "MAX_BODY_BYTES"]
