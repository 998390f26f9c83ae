#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 for the store contract tests, if the server binaries
# are on this machine; print the SQLAlchemy URL on stdout. Prints nothing when unavailable.
set -euo pipefail
command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 || exit 0
dir=$(mktemp -d /tmp/promptopt-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "initdb -D '$dir/data' -U promptopt --auth=trust >/dev/null" >&2 || exit 0
as_pg "pg_ctl -D '$dir/data' -o '-p $port -k $dir -c listen_addresses=127.0.0.1' -l '$dir/log' -w start >/dev/null" >&2 || exit 0
as_pg "createdb -h 127.0.0.1 -p $port -U promptopt promptopt_test" >&2 || exit 0
echo "$dir" > /tmp/promptopt-pg.last
echo "postgresql+psycopg://promptopt@127.0.0.1:$port/promptopt_test"
