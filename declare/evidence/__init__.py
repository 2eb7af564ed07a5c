"""Evidence before users see a version: reading an endpoint's captured requests
(`captured`) and replaying them against two served entities (`replay`).

What it does not do: judge (`declare.model.evidence.verdict`), mirror live requests (the
gateway's), or decide when a replay runs (the plan's).
"""
