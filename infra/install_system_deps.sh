#!/usr/bin/env bash
# Installs the Debian packages that the integration tests need, when missing and when we can (root + apt):
#   postgresql-15  initdb/pg_ctl for the PostgreSQL-backed Prefect server test (/usr/lib/postgresql/15/bin)
#   chromium       the headless browser of the Prefect UI test (driven by the playwright Python package)
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: missing ${need[*]} and cannot apt-get install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
