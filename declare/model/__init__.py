"""The core's immutable values: what the manifests ask for and what a provider is asked to run.

These types are shared by every stage (manifests, resolve, diff, plan, apply) and by the
providers and the gateway, which depend on nothing else of the core. They hold data only:
no I/O, no MLflow, no processes.

    resolved   ResolvedModel: a model URI pinned at plan time
    endpoint   EndpointSpec, EntitySpec, Route, workload sizes
    batching   Batching: a served entity's micro-batching (opt-in)
    rollout    RolloutPolicy, Guards, Figures and the guards' verdict (`judge`)
    capture    CaptureTarget: an endpoint's inference table and its folder
    evidence   ReplayPolicy, ShadowPolicy, Bounds, Evidence and their verdict
    agreement  whether two answers to one request agree, row by row (replay, shadow)
    limits     RateLimit and how a manifest's limits are read
    scaling    replica ranges from workload sizes / concurrency; the autoscaling timings
    replica    ReplicaSpec (what to start), ReplicaHandle (what was started)
    logs       LogSource, BuildLog: where a replica's log and build log are read from
    hashing    canonical JSON and content hashes
    names      name limits, and the replica ids providers name what they make after
"""

from declare.model.batching import Batching
from declare.model.capture import CaptureTarget, capture_target
from declare.model.endpoint import (
    WORKLOAD_SIZES,
    WORKLOAD_TYPES,
    EndpointSpec,
    EntitySpec,
    Route,
)
from declare.model.evidence import Bounds, Evidence, ReplayPolicy, ShadowPolicy, verdict
from declare.model.hashing import canonical_json, short_hash
from declare.model.limits import LimitError, ManifestLimits, RateLimit, manifest_limits
from declare.model.logs import BuildLog, LogSource
from declare.model.names import (
    ENDPOINT_NAME_MAX,
    ENTITY_NAME_MAX,
    PROJECT_NAME_MAX,
    REPLICA_ID_MAX,
    replica_id_problem,
    replica_id_stem,
    sanitize_id,
)
from declare.model.replica import ReplicaHandle, ReplicaSpec
from declare.model.resolved import ResolvedModel
from declare.model.rollout import Figures, Guards, RolloutPolicy, judge, rollout_problems
from declare.model.scaling import AutoscalePolicy, ReplicaRange

__all__ = [
    "ENDPOINT_NAME_MAX",
    "ENTITY_NAME_MAX",
    "PROJECT_NAME_MAX",
    "REPLICA_ID_MAX",
    "WORKLOAD_SIZES",
    "WORKLOAD_TYPES",
    "AutoscalePolicy",
    "Batching",
    "Bounds",
    "BuildLog",
    "CaptureTarget",
    "EndpointSpec",
    "EntitySpec",
    "Evidence",
    "Figures",
    "Guards",
    "LimitError",
    "LogSource",
    "ManifestLimits",
    "RateLimit",
    "ReplayPolicy",
    "ReplicaHandle",
    "ReplicaRange",
    "ReplicaSpec",
    "ResolvedModel",
    "RolloutPolicy",
    "Route",
    "ShadowPolicy",
    "canonical_json",
    "capture_target",
    "judge",
    "manifest_limits",
    "replica_id_problem",
    "replica_id_stem",
    "rollout_problems",
    "sanitize_id",
    "short_hash",
    "verdict",
]
