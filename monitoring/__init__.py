"""The exporter's monitoring assets, generated from one source.

`python -m monitoring` writes the Prometheus rule file (`alerts/sidekiq.rules.yml`), the same
rules as a PrometheusRule (`deploy/kubernetes/prometheusrule.yaml`) and the Grafana dashboards
(`dashboards/*.json`) from `monitoring.rules` and `monitoring.dashboards`, with the links of
`monitoring.config`. The output is committed; a test checks that running the
generator again changes nothing.
"""
