#!/bin/sh
# Peer two kite instances by invitation, as `kite demo` does, through their admin APIs:
#
#   A_URL=http://127.0.0.1:7701 B_URL=http://127.0.0.1:7702 \
#   A_KEY=kite_aaaaaaaa_... B_KEY=kite_aaaaaaaa_... sh scripts/peer.sh
#
#   1. A invites:   POST A/api/federation/invitations {"scopes":SCOPES,"max_hops":MAX_HOPS}
#                   (what A sends B; answers a single-use invitation naming A's public URL)
#   2. B accepts:   POST B/api/federation/invitations/accept
#                   {"invitation":INVITATION,"scopes":SCOPES} (what B sends A)
#   B fetches A's descriptor at A's KITE_PUBLIC_URL, and each side ends with a peer for the
#   other, its Ed25519 keys pinned: events flow both ways, signed, with no shared secret.
# Already peered (B has a peer named A_NAME) is left alone, so the script can run again.
#
# Required: A_URL, B_URL (admin API base URLs as this script reaches them), A_KEY, B_KEY.
# Optional: A_NAME (instance-a: A's server name, KITE_INSTANCE_ID), SCOPES (["*"]),
#           MAX_HOPS (3), WAIT_SECONDS (120: how long to wait for both admin APIs to answer).
# Uses only POSIX sh, curl and sed (runs in the curlimages/curl image).
set -eu

: "${A_URL:?A_URL is required}" "${B_URL:?B_URL is required}"
: "${A_KEY:?A_KEY is required}" "${B_KEY:?B_KEY is required}"
A_NAME=${A_NAME:-instance-a}
B_NAME=${B_NAME:-instance-b}
A_URL=${A_URL%/}
B_URL=${B_URL%/}
SCOPES=${SCOPES:-'["*"]'}
MAX_HOPS=${MAX_HOPS:-3}
WAIT_SECONDS=${WAIT_SECONDS:-120}

say() { printf 'peer.sh: %s\n' "$*"; }
fail() { printf 'peer.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# api METHOD URL KEY [JSON]: the response body in $BODY, the status in $STATUS.
# Returns non-zero on a transport error or a non-2xx status.
api() {
    if [ $# -ge 4 ]; then
        _out=$(curl -sS --max-time 15 -X "$1" -w '\n%{http_code}' \
            -H "Authorization: Bearer $3" -H 'Accept: application/json' \
            -H 'Content-Type: application/json' --data-binary "$4" "$2") ||
            { STATUS=000; BODY=''; return 1; }
    else
        _out=$(curl -sS --max-time 15 -X "$1" -w '\n%{http_code}' \
            -H "Authorization: Bearer $3" -H 'Accept: application/json' "$2") ||
            { STATUS=000; BODY=''; return 1; }
    fi
    STATUS=$(printf '%s\n' "$_out" | sed -n '$p')
    BODY=$(printf '%s\n' "$_out" | sed '$d')
    case "$STATUS" in 2??) return 0 ;; *) return 1 ;; esac
}

# json_str FIELD: the string value of "FIELD" in $BODY (first occurrence).
json_str() {
    printf '%s\n' "$BODY" | tr -d '\n' |
        sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p"
}

wait_for() { # NAME URL KEY
    _deadline=$(( $(date +%s) + WAIT_SECONDS ))
    until api GET "$2/api/federation/peers" "$3" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$_deadline" ]; then
            fail "$1 admin API at $2 not answering 2xx after ${WAIT_SECONDS}s (last status $STATUS: $BODY)"
        fi
        sleep 2
    done
    say "$1 is up at $2"
}

wait_for "$A_NAME" "$A_URL" "$A_KEY"
wait_for "$B_NAME" "$B_URL" "$B_KEY"

api GET "$B_URL/api/federation/peers" "$B_KEY" || fail "listing peers on $B_NAME: $STATUS $BODY"
if printf '%s' "$BODY" | tr -d '\n' | grep -q "\"name\"[[:space:]]*:[[:space:]]*\"$A_NAME\""; then
    say "$B_NAME already has peer $A_NAME: left as it is"
    exit 0
fi

api POST "$A_URL/api/federation/invitations" "$A_KEY" "{\"scopes\":$SCOPES,\"max_hops\":$MAX_HOPS}" ||
    fail "inviting on $A_NAME: $STATUS $BODY"
INVITATION=$(json_str invitation)
[ -n "$INVITATION" ] || fail "no \"invitation\" in $A_NAME's answer to POST /api/federation/invitations"
say "$A_NAME invited (scopes $SCOPES)"

api POST "$B_URL/api/federation/invitations/accept" "$B_KEY" \
    "{\"invitation\":\"$INVITATION\",\"scopes\":$SCOPES}" ||
    fail "accepting on $B_NAME: $STATUS $BODY"
say "done: $A_NAME <-> $B_NAME peered by invitation"
