#!/usr/bin/env bash
# Runs Ferry's whole test suite. Installs what the tests need first: moto (a real
# S3-compatible server) and kmock (a Kubernetes API emulator, the base of the operator tests'
# API stand-in, tests/support/kapi.py) in ./.venv. When Garage is installed (FERRY_TEST_GARAGE, `garage` on
# PATH, /opt/garage/bin/garage, or the benchmark's ~/.cache/ferry-bench/garage/bin/garage), the end-to-end tests run a second time against it.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-shot build (CI) gains nothing from incremental state, which is a quarter of target/.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
echo "== free disk where target/ goes: $(df -h --output=avail . | tail -1 | tr -d ' ')"

if [ ! -x .venv/bin/moto_server ]; then
  echo "installing moto into .venv (about 2 minutes, once)..."
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5.2.5,<6'
fi
if ! .venv/bin/python -c 'import kmock' 2>/dev/null; then
  echo "installing kmock (the Kubernetes API stand-in of the operator tests) into .venv..."
  .venv/bin/pip install --quiet --disable-pip-version-check 'kmock==0.8.*'
fi
export FERRY_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export FERRY_KMOCK_PYTHON="$PWD/.venv/bin/python"

echo "== unit and end-to-end tests (moto)"
env -u FERRY_TEST_GARAGE cargo test --workspace --locked --no-fail-fast

echo "== benchmark smoke run (tiny sizes against moto; checks that every tool's copy is complete, no timing asserts)"
cargo build --locked -p ferry-operator --bins
bench/run.sh --smoke --ferry "$PWD/target/debug/ferry" --venv "$PWD/.venv"

garage="${FERRY_TEST_GARAGE:-$(command -v garage || true)}"
for g in /opt/garage/bin/garage "$HOME/.cache/ferry-bench/garage/bin/garage"; do
  if [ -z "$garage" ] && [ -x "$g" ]; then garage="$g"; fi
done
if [ -n "$garage" ]; then
  echo "== end-to-end tests against Garage ($garage)"
  FERRY_TEST_GARAGE="$garage" cargo test -p ferry-tests --locked --no-fail-fast
else
  echo "== Garage not installed: skipping the second S3 target (cargo install garage --locked)"
fi
