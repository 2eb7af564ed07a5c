"""declare's own replica server: what `mlflow models serve` answers, with less between a request
and its prediction, and opt-in micro-batching.

Run as `python -m declare.serve --model URI --host HOST --port PORT` (`declare.serve.main`);
the local provider starts it for `providers.local.server: declare`. Modules, from the socket in:

    http       HTTP/1.1 on asyncio and httptools; one request at a time per connection
    scoring    MLflow's paths (/invocations, /ping, /health, /version), answered with MLflow's
               own parsing, prediction and serialization functions
    body       the JSON object of a small JSON body, decoded once for the two below
    direct     the short way to a scikit-learn model's answer, for requests it cannot change
    joining    which requests may share a predict call; joins their rows and splits the answer
    batching   adaptive micro-batching: joins what comes while a predict runs

It imports nothing else of declare (import-linter checks it): it runs in the model's
environment, where only MLflow, its dependencies, httptools and this package are needed.
"""
