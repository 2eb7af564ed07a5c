"""The plan's DAG as Graphviz DOT or as a Mermaid flowchart, for reading and for review.

Both renderings are pure functions of a `Plan`: one node per action (its order number, symbol
and one-line summary), one edge per "must finish before" constraint, the actions of one
endpoint grouped in a cluster (DOT) or subgraph (Mermaid); project-wide actions (gateway,
builds, orphans) stand outside any group. Node ids are derived from the action's position, so
the output is stable for a given plan and never needs escaping.

Does not lay the graph out or call Graphviz: pipe DOT into `dot -Tsvg`, or paste Mermaid into
a Markdown ```mermaid block (GitHub renders it).
"""

from __future__ import annotations

from collections.abc import Callable

from declare.plan.actions import Action, Plan

# Fill colours by the action's symbol: + green, - red, ~ amber, ? blue (Terraform's palette).
_FILL = {"+": "#d4f7d4", "-": "#f9d0d0", "~": "#fdf0c4", "?": "#d6e6fb"}


def _ids(plan: Plan) -> dict[str, str]:
    return {a.id: f"a{i}" for i, a in enumerate(plan.actions, 1)}


def _groups(plan: Plan) -> dict[str | None, list[tuple[int, Action]]]:
    out: dict[str | None, list[tuple[int, Action]]] = {}
    for i, a in enumerate(plan.actions, 1):
        out.setdefault(a.endpoint, []).append((i, a))
    return out


def _label(i: int, a: Action) -> str:
    return f"{i}. {a.kind.symbol} {a.summary}"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(plan: Plan) -> str:
    """Graphviz DOT: `declare graph | dot -Tsvg > plan.svg`."""
    ids = _ids(plan)
    out = [
        "digraph plan {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]

    def node(i: int, a: Action, indent: str) -> str:
        fill = _FILL.get(a.kind.symbol, "#ffffff")
        return (
            f"{indent}{ids[a.id]} [label={_dot_quote(_label(i, a))}, "
            f'fillcolor="{fill}", tooltip={_dot_quote(a.id)}];'
        )

    for n, (endpoint, members) in enumerate(_groups(plan).items()):
        if endpoint is None:
            out += [node(i, a, "  ") for i, a in members]
            continue
        out.append(f"  subgraph cluster_{n} {{")
        out.append(f"    label={_dot_quote('endpoint ' + endpoint)};")
        out += [node(i, a, "    ") for i, a in members]
        out.append("  }")
    out += [f"  {ids[b]} -> {ids[a]};" for b, a in plan.edges if b in ids and a in ids]
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid labels are quoted; a double quote inside is written as an entity.
    return text.replace('"', "#quot;").replace("\n", " ")


_MERMAID_CLASS = {"+": "create", "-": "destroy", "~": "change", "?": "check"}


def render_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart: paste into a ```mermaid block of a Markdown file or comment."""
    ids = _ids(plan)
    out = ["flowchart TD"]

    def node(i: int, a: Action, indent: str) -> str:
        cls = _MERMAID_CLASS.get(a.kind.symbol, "change")
        return f'{indent}{ids[a.id]}["{_mermaid_text(_label(i, a))}"]:::{cls}'

    for n, (endpoint, members) in enumerate(_groups(plan).items()):
        if endpoint is None:
            out += [node(i, a, "  ") for i, a in members]
            continue
        out.append(f'  subgraph g{n}["endpoint {_mermaid_text(endpoint)}"]')
        out += [node(i, a, "    ") for i, a in members]
        out.append("  end")
    out += [f"  {ids[b]} --> {ids[a]}" for b, a in plan.edges if b in ids and a in ids]
    for symbol, cls in _MERMAID_CLASS.items():
        out.append(f"  classDef {cls} fill:{_FILL[symbol]},stroke:#555")
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Plan], str]] = {"dot": render_dot, "mermaid": render_mermaid}

__all__ = ["RENDERERS", "render_dot", "render_mermaid"]
