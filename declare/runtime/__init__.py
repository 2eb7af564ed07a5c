"""The runtime: what keeps endpoints as declared between two applies.

It never reads manifests and never changes what was declared: it keeps what runs inside
what was recorded. Each tick it looks (the gateway's demand per served entity, what the
providers say runs), decides (pure: `decide` for replica counts, `healing` for crash
loops), and acts through the same engine, executor and state writer as apply, under the
state lock (a tick that finds the lock taken, by an apply, does nothing):

- a dead replica is replaced (a replica that keeps dying is backed off, and reported);
- a dead gateway is started again;
- replica counts follow demand within each entity's range; scale to zero and wake;
- every decision is recorded in the state with its reason.

    decide     autoscaling decisions (pure)
    healing    crash-loop accounting and backoff (pure)
    loop       the tick: look, decide, act
    keeper     the process that restarts the runtime when it dies (and is restarted by it)
    __main__   `python -m declare.runtime --project-dir DIR`

Starting and stopping the processes is `declare.runtime_control`'s (apply and destroy call
it through the plan's start-runtime / stop-runtime actions).
"""
