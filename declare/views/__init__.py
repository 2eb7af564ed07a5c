"""Views: how values are shown, never decided (Terraform's command/views).

plan       a plan as human text (`terraform plan`'s style) and as versioned JSON
markdown   a plan as a pull-request comment
graph      a plan's DAG as Graphviz DOT or Mermaid
apply      an apply as it runs: human text (a live line on a terminal) or JSON lines
status     the recorded state (`show`) and what runs (`status`)
"""
