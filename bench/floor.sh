#!/usr/bin/env bash
# What Postgres alone spends on one statement from a lone client at an everyday rate: the
# floor under kite's CPU per event at 300 events a second (bench/README.md, "What bounds
# the targets here"). For each statement, pgbench sends it RATE times a second for 20 s
# over one connection and the backend's CPU is read from /proc; printed in µs a statement.
#
#   bench/floor.sh [--kite-bin PATH] [--rate N]
#
# Postgres is KITE_DATABASE_URL's server (default postgres://postgres@127.0.0.1:5432); the
# script makes a database of its own, migrates it with `kite migrate` and drops it at the
# end. It must run on the database's host (it reads /proc/PID/stat of the backend).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KITE=target/release/kite
RATE=300
while [ $# -gt 0 ]; do
    case $1 in
        --kite-bin) KITE=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        *) echo "usage: bench/floor.sh [--kite-bin PATH] [--rate N]" >&2; exit 2 ;;
    esac
done
SERVER=${KITE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
case ${SERVER#*://} in */*) SERVER=${SERVER%/*} ;; esac   # the server, without a database
DB=kite_floor_$$
WORK=$(mktemp -d)
trap 'psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT

psql -q "$SERVER/postgres" -c "CREATE DATABASE $DB"
KITE_DATABASE_URL="$SERVER/$DB" "$KITE" migrate >/dev/null 2>&1
psql -q "$SERVER/$DB" <<'SQL'
INSERT INTO teams (id) VALUES ('floor');
CREATE TABLE plain (id bigserial PRIMARY KEY, a text, b text, c bigint);
CREATE INDEX ON plain (a); CREATE INDEX ON plain (b); CREATE INDEX ON plain (c);
SQL

echo 'SELECT 1;' >"$WORK/round-trip.sql"
echo "INSERT INTO plain (a, b, c) VALUES (md5(random()::text), md5(random()::text), (random() * 1e9)::bigint);" \
    >"$WORK/one-row-insert.sql"
# kite's ingest statement as the source has it, with one event and its outbox row.
python3 - "$WORK/ingest-statement.sql" <<'PY'
import re, sys
src = open("store/src/events/routed.rs").read()
q = re.search(r'const INSERT_ROUTED: &str = "(.*?)";', src, re.S).group(1)
event = ('{"specversion":"1.0","id":"x","type":"stripe.charge.succeeded","source":"stripe",'
         '"data":{"object":{"id":"ch_1","amount":2000,"currency":"usd"}}}')
null = "ARRAY[NULL]::text[]"
args = ["ARRAY['floor']", "ARRAY['stripe']", "ARRAY[md5(random()::text)]", "ARRAY['stripe']",
        "ARRAY['stripe.charge.succeeded']", "ARRAY['%s']" % event, null, "ARRAY['[]']",
        "ARRAY[0]", null, null, null, null, "ARRAY[1::bigint]",
        "ARRAY['7d444840-9dc0-11d1-b245-5ffdce74fad2'::uuid]", "ARRAY['pending']", null,
        "ARRAY[30::float8]", null]
for i in range(len(args), 0, -1):
    q = q.replace("$%d" % i, args[i - 1])
open(sys.argv[1], "w").write(" ".join(q.split()) + ";\n")
PY

for script in round-trip one-row-insert ingest-statement; do
    pgbench -n -c 1 -R "$RATE" -T 22 -M prepared -f "$WORK/$script.sql" "$SERVER/$DB" \
        >"$WORK/$script.log" 2>&1 &
    bench=$!
    sleep 1
    pid=$(psql -At "$SERVER/postgres" -c \
        "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND application_name = 'pgbench'")
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 20
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    wait "$bench" || { cat "$WORK/$script.log" >&2; exit 1; }
    ticks=$(getconf CLK_TCK)
    echo "$script: $(( (t1 - t0) * 1000000 / ticks / (RATE * 20) )) µs of backend CPU a statement at $RATE/s"
done
