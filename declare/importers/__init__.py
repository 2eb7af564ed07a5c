"""Importers: existing serving endpoints described elsewhere -> declare manifests.

One module per source (`databricks`). Each is a pure function of the source's JSON: it
reads no network and writes no file (`declare import ...` in declare.commands.importer does).
"""
