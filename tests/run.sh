#!/usr/bin/env bash
# Runs Ferry's whole test suite. Installs what the tests need first: moto (a real
# S3-compatible server) and kmock (a Kubernetes API emulator, the base of the operator tests'
# API stand-in, tests/support/kapi.py) in ./.venv, and cargo-deny and cargo-audit, which check
# the dependency tree before the tests (docs/verification.md, "Supply chain"). When Garage is
# installed (FERRY_TEST_GARAGE, `garage` on PATH, /opt/garage/bin/garage, or the benchmark's
# ~/.cache/ferry-bench/garage/bin/garage), the end-to-end tests run a second time against it.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-shot build (CI) gains nothing from incremental state, which is a quarter of target/.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# A failing test's message must stay in the tail of the output a CI keeps, not sink under a
# backtrace: none unless FERRY_TEST_BACKTRACE asks for one (1 or full).
export RUST_BACKTRACE="${FERRY_TEST_BACKTRACE:-0}"
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
# helm-python-sdk (Helm v4's library, no helm binary) lints and renders the chart in the tests
# (tests/e2e/chart.rs); it needs Python >= 3.12, which pyenv provides on these machines.
helm_python=""
for py in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python; do
  if command -v "$py" >/dev/null 2>&1 \
    && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    helm_python=$(command -v "$py"); break
  fi
done
if [ -n "$helm_python" ]; then
  [ -x .venv-helm/bin/python ] || "$helm_python" -m venv .venv-helm
  # kubernetes-validate checks every rendered object against the Kubernetes OpenAPI schemas
  # (shipped in the package: offline).
  if ! .venv-helm/bin/python -c 'import helm_python, kubernetes_validate' 2>/dev/null; then
    echo "installing helm-python-sdk and kubernetes-validate (render and check the chart in the tests) into .venv-helm..."
    .venv-helm/bin/pip install --quiet --disable-pip-version-check 'helm-python-sdk==0.2.2' \
      'kubernetes-validate==1.37.0'
  fi
  export FERRY_HELM_PYTHON="$PWD/.venv-helm/bin/python"
elif [ "${CI:-}" = true ]; then
  echo "FAILED: no Python >= 3.12 to render the chart with (pyenv install 3.12)" >&2
  exit 1
else
  echo "WARNING: no Python >= 3.12: the chart is not rendered (pyenv install 3.12)" >&2
fi
export FERRY_MOTO_SERVER="$PWD/.venv/bin/moto_server"
export FERRY_KMOCK_PYTHON="$PWD/.venv/bin/python"

echo "== supply chain: cargo deny (licenses, advisories, bans, sources; deny.toml) and cargo audit"
# Pinned versions, built once into FERRY_TOOLS_DIR (default ~/.cache/ferry-tools; cache that
# directory in CI to skip the build: on 2 cores shared with other builds cargo-deny took 3 and
# cargo-audit 8 minutes). `cargo install` builds in a temporary target directory of its own,
# never in target/.
CARGO_DENY_VERSION=0.20.2
CARGO_AUDIT_VERSION=0.22.2
tools="${FERRY_TOOLS_DIR:-$HOME/.cache/ferry-tools}"
install_tool() { # crate version
  if [ "$("$tools/bin/$1" --version 2>/dev/null | awk '{print $NF}')" = "$2" ]; then return; fi
  echo "installing $1 $2 into $tools (cargo install --locked, a few minutes, once)..."
  env -u CARGO_TARGET_DIR cargo install --locked --quiet --root "$tools" "$1@$2"
}
install_tool cargo-deny "$CARGO_DENY_VERSION"
install_tool cargo-audit "$CARGO_AUDIT_VERSION"
export PATH="$tools/bin:$PATH"
# Both tools read the RustSec advisory database. It is fetched here, once, with git, into
# $tools/advisory-db, from GitHub or from the mirror FERRY_ADVISORY_DB (a git URL or path); cargo
# audit reads that copy, and cargo deny's own fetch is pointed at it with git's insteadOf. The
# machines this suite runs on may have no route to GitHub: with no copy at all, only the checks
# that need no database run (licenses, bans, sources) and a loud warning says so; a copy that
# could not be updated, or whose last commit is older than 90 days
# (FERRY_ADVISORY_DB_MAX_AGE_DAYS), is still checked against, with a warning.
# FERRY_REQUIRE_ADVISORIES=1 (for a CI that reaches GitHub or a mirror) makes both fail.
advisory_url="${FERRY_ADVISORY_DB:-https://github.com/rustsec/advisory-db}"
if [ -d "$advisory_url" ]; then advisory_url="file://$(cd "$advisory_url" && pwd)"; fi
advisory_db="$tools/advisory-db"
advisory_problem="" # no database to check against
advisory_warning="" # a database, but not a current one
if [ -d "$advisory_db/.git" ]; then
  git -C "$advisory_db" remote set-url origin "$advisory_url"
  timeout 300 git -C "$advisory_db" fetch --quiet --depth 1 origin main \
    && git -C "$advisory_db" reset --quiet --hard FETCH_HEAD \
    || advisory_warning="could not update $advisory_db from $advisory_url"
else
  rm -rf "$advisory_db"
  timeout 300 git clone --quiet --depth 1 --branch main "$advisory_url" "$advisory_db" \
    || advisory_problem="could not clone the advisory database from $advisory_url"
fi
if [ -z "$advisory_problem" ]; then
  db_age_days=$(( ($(date +%s) - $(git -C "$advisory_db" log -1 --format=%ct)) / 86400 ))
  echo "advisory database: $advisory_url at $(git -C "$advisory_db" log -1 --format='%h, %cs'), $db_age_days days old"
  max_age_days="${FERRY_ADVISORY_DB_MAX_AGE_DAYS:-90}"
  if [ "$db_age_days" -gt "$max_age_days" ]; then
    advisory_warning="${advisory_warning:+$advisory_warning; }the advisory database is $db_age_days days old (limit $max_age_days days)"
  fi
fi
if [ -n "$advisory_problem$advisory_warning" ] && [ "${FERRY_REQUIRE_ADVISORIES:-}" = 1 ]; then
  echo "FAILED: $advisory_problem$advisory_warning. cargo deny and cargo audit need a current" \
    "RustSec database: let this machine reach GitHub, or set FERRY_ADVISORY_DB to an up-to-date mirror" >&2
  exit 1
fi
if [ -n "$advisory_warning" ]; then
  echo "WARNING: $advisory_warning: advisories checked against that copy only" \
    "(FERRY_REQUIRE_ADVISORIES=1 makes this fail)" >&2
fi
if [ -n "$advisory_problem" ]; then
  cargo deny --locked check --hide-inclusion-graph licenses bans sources
  echo "WARNING: $advisory_problem: advisories NOT checked (licenses, bans and sources were;" \
    "FERRY_REQUIRE_ADVISORIES=1 makes this fail)" >&2
else
  GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$advisory_db.insteadOf" \
    GIT_CONFIG_VALUE_0=https://github.com/rustsec/advisory-db \
    cargo deny --locked check --hide-inclusion-graph
  # cargo audit honours the same ignore list (the `id = "RUSTSEC-…"` entries of deny.toml) and,
  # like cargo deny, fails on unmaintained, unsound and yanked crates too.
  audit_ignores=()
  for id in $(grep -v '^[[:space:]]*#' deny.toml | sed -n 's/.*id *= *"\(RUSTSEC-[0-9]*-[0-9]*\)".*/\1/p'); do
    audit_ignores+=(--ignore "$id")
  done
  cargo audit --db "$advisory_db" --no-fetch --deny warnings "${audit_ignores[@]}"
fi

# PostgreSQL for the database-source tests (tests/support/postgres.rs starts its own server
# with initdb in a temporary directory, as the postgres user when run as root). Debian's
# `postgresql` package brings the binaries (/usr/lib/postgresql/*/bin); without them, and not
# root to install them, those tests print a notice and skip.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing PostgreSQL (Debian's postgresql package) for the database-source tests..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "WARNING: PostgreSQL is not installed (apt-get install postgresql): its tests are skipped" >&2
  fi
fi
if [ -z "${FERRY_TEST_PG_BIN:-}" ] && ! command -v initdb >/dev/null 2>&1; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$pg_bin" ]; then export FERRY_TEST_PG_BIN="$pg_bin"; fi
fi

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
