"""Lints and renders charts/ferry with Helm's own library (helm-python-sdk embeds Helm v4; no
helm binary). Usage: render_chart.py CHART_DIR VALUES_JSON. Prints the rendered templates as one
JSON object {template path: YAML text}; exits 1 with the lint errors when there are any."""
import json
import sys

from helm_python import chart

chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
report = chart.lint(chart_dir, values=values, namespace="ferry-system")
if report.get("errors"):
    print(json.dumps(report["errors"], indent=2), file=sys.stderr)
    sys.exit(1)
c = chart.Chart.load(chart_dir)
print(json.dumps(c.render(values, name="ferry", namespace="ferry-system", is_install=True)))
