"""Allow-listed environments for the processes declare starts (replicas, the gateway).

Each process gets what it needs and nothing else of declare's environment:

    every process   BASE_NAMES (PATH, HOME, locale, time zone, temp folder, proxies and CA
                    bundles, the Python path) and LC_* variables
    a replica       + what loading a model may need: MLFLOW_*, the artifact stores'
                    credentials (AWS_*, AZURE_*, GOOGLE_APPLICATION_CREDENTIALS, GCS_*,
                    HF_*), native thread counts (OMP_NUM_THREADS ...), and the names or
                    `PREFIX*` patterns the provider's `pass_env` setting adds; the provider
                    then adds the replica's own variables (its manifest's environment_vars,
                    with its own secrets, and DECLARE_PROJECT / DECLARE_REPLICA_ID)
    the gateway     + its end users' token, set by its starter under its own name

So the gateway never holds a secret, MLflow's credentials or the state's DSN, and a replica
never holds another replica's secrets, the gateway's token, the state's DSN or anything a
shell happened to export. The runtime is the exception: it acts as `apply` does, so it gets
apply's environment (see declare.runtime_control).

Pure functions over mappings: this module reads no environment itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SECRET_PREFIX = "DECLARE_SECRET_"  # declare.secrets' variables (re-exported there as PREFIX)
BASE_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "TERM", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
    }
)  # fmt: skip
BASE_PREFIXES = ("LC_",)
MODEL_NAMES = frozenset(
    {
        "GOOGLE_APPLICATION_CREDENTIALS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
    }
)  # fmt: skip
MODEL_PREFIXES = ("MLFLOW_", "AWS_", "AZURE_", "GCS_", "HF_")


def _matches(name: str, names: Iterable[str], prefixes: Iterable[str]) -> bool:
    return name in names or name.startswith(tuple(prefixes))


def patterns(pass_env: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """A `pass_env` list split into exact names and prefixes (`NAME*`)."""
    names = frozenset(p for p in pass_env if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in pass_env if p.endswith("*") and len(p) > 1)
    return names, prefixes


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What every process declare starts may see of `environ`."""
    return {k: v for k, v in environ.items() if _matches(k, BASE_NAMES, BASE_PREFIXES)}


def replica_environment(environ: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """What a replica may see of declare's environment, before its own variables. A
    secret (DECLARE_SECRET_*) never passes, whatever `pass_env` says: a replica's secrets
    come in its own environment_vars."""
    extra_names, extra_prefixes = patterns(pass_env)
    names = BASE_NAMES | MODEL_NAMES | extra_names
    prefixes = BASE_PREFIXES + MODEL_PREFIXES + extra_prefixes
    return {
        k: v
        for k, v in environ.items()
        if _matches(k, names, prefixes) and not k.startswith(SECRET_PREFIX)
    }
