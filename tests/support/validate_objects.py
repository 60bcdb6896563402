"""Validates Kubernetes objects against the Kubernetes OpenAPI schemas, offline, with
kubernetes-validate (its schemas ship in the package), in strict mode (an unknown field is an
error). Usage: validate_objects.py KUBERNETES_VERSION < objects.json (a JSON array). Prints
{"errors": ["Kind/name: message", ...], "skipped": ["Kind", ...]}: skipped are kinds it has no
schema for (a CRD's kind, such as prometheus-operator's ServiceMonitor)."""
import json
import sys

import kubernetes_validate

version = sys.argv[1]
errors, skipped = [], []
for obj in json.load(sys.stdin):
    what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        skipped.append(obj.get("kind"))
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        errors.append(f"{what}: at {path or '.'}: {e.message}")
print(json.dumps({"errors": errors, "skipped": sorted(set(skipped))}))
