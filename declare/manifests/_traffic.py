"""The traffic of an endpoint manifest: `config.traffic_config.routes`, normalized.

Checked here (each problem located at its field): a route names an existing entity (by
`served_entity_name` or `served_model_name`; both only when they agree), each entity at most
once, and the percentages sum to 100.

Without `traffic_config`: one entity gets 100%; several get an even split, the remainder
going to the first entity (e.g. 34/33/33). Databricks documents no default for several
entities: its API reference asks for a route per served entity and every multi-entity example
spells traffic_config out, so a manifest meant to run on Databricks too should write it. With
`traffic_config`, an entity without a route is served but gets no traffic: it is normalized
to a route of 0% (Databricks wants that route written).

Does not check the entities themselves (`_entities`) or how traffic moves during a rollout
(declare.model's RolloutPolicy and the planner).
"""

from __future__ import annotations

import re
from typing import Any

from declare.model import Route

from ._entities import NamedEntities
from ._findings import Findings
from ._schema import did_you_mean, show
from ._source import FieldPath

PERCENT_RE = re.compile(r"^(100|[1-9]?[0-9])$")

_ROUTES: FieldPath = ("config", "traffic_config", "routes")


def even_split(names: list[str]) -> tuple[Route, ...]:
    """100% over `names`, evenly; the remainder goes to the first (34/33/33)."""
    if not names:
        return ()
    share, remainder = divmod(100, len(names))
    return tuple(Route(name, share + (remainder if i == 0 else 0)) for i, name in enumerate(names))


def _percentage(value: Any) -> int | None:
    """A traffic percentage as a whole number from 0 to 100 (`50`, `50.0`, `"50"`), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 100 else None
    if isinstance(value, str) and PERCENT_RE.match(value):
        return int(value)
    return None


def check_routes(
    config: dict[str, Any], entities: NamedEntities | None, found: Findings
) -> tuple[Route, ...] | None:
    """Every entity's route, in the written order then the unrouted at 0%; None on a problem.

    `entities` None (some entity has no name) still checks each route, against no names.
    """
    names = [name for name, _ in entities] if entities is not None else None
    traffic = config.get("traffic_config")
    if traffic is None:
        return even_split(names) if names is not None else None
    if not isinstance(traffic, dict) or not isinstance(traffic.get("routes"), list):
        return None
    routes = _written_routes(traffic["routes"], names, found)
    if routes is None or names is None:
        return None
    total = sum(r.traffic_percentage for r in routes)
    if total != 100:
        terms = " + ".join(str(r.traffic_percentage) for r in routes)
        found.report(_ROUTES, f"traffic percentages must sum to 100, got {total} ({terms})")
        return None
    routed = {r.served_entity_name for r in routes}
    unrouted = [Route(name, 0) for name in names if name not in routed]
    return (*routes, *unrouted)


def _written_routes(
    raw_routes: list[Any], names: list[str] | None, found: Findings
) -> list[Route] | None:
    """The routes as written; None when one cannot be read or routes an entity twice."""
    routes: list[Route] = []
    routed: dict[str, int] = {}
    complete = True
    for j, raw in enumerate(raw_routes):
        path: FieldPath = (*_ROUTES, j)
        if not isinstance(raw, dict):
            complete = False
            continue
        target = _route_target(raw, path, names, found)
        percentage = _percentage(raw.get("traffic_percentage"))
        if target is None or percentage is None:
            complete = False
            continue
        if target in routed:
            found.report(
                path,
                f"served entity {target!r} is routed twice (also by routes[{routed[target]}]); "
                "give each entity one route",
            )
            complete = False
            continue
        routed[target] = j
        routes.append(Route(target, percentage))
    return routes if complete else None


def _route_target(
    raw: dict[str, Any], path: FieldPath, names: list[str] | None, found: Findings
) -> str | None:
    """The entity a route names; None when it names none, or one that does not exist."""
    by_entity, by_model = raw.get("served_entity_name"), raw.get("served_model_name")
    if by_entity is not None and by_model is not None and by_entity != by_model:
        found.report(
            (*path, "served_model_name"),
            f"names {show(by_model)} but served_entity_name names {show(by_entity)}; "
            "give one of them",
        )
        return None
    key = "served_entity_name" if by_entity is not None else "served_model_name"
    target = raw.get(key)
    if target is None:
        found.report((*path, "served_entity_name"), "is required (or served_model_name)")
        return None
    if not isinstance(target, str):
        return None
    if names is not None and target not in names:
        hint = did_you_mean(target, names)
        found.report(
            (*path, key),
            f"no served entity named {target!r}; served entities: {', '.join(names)}{hint}",
        )
        return None
    return target
