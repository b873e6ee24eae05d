#!/bin/sh
# Peer two kite instances with each other, both directions, through their admin APIs.
#
#   A_URL=http://127.0.0.1:7701 B_URL=http://127.0.0.1:7702 \
#   A_KEY=kite_aaaaaaaa_... B_KEY=kite_aaaaaaaa_... sh scripts/peer.sh
#
# For each direction X -> Y:
#   1. Y mints a token:               POST Y/api/federation/tokens {"label":"from-X"}
#   2. Y trusts X with it:            POST Y/api/federation/trusted-senders
#                                          {"name":X, "inbound_token":TOKEN}
#   3. X gets Y as a peer with it:    POST X/api/federation/peers
#                                          {"name":Y, "peer_hook_url":Y_HOOK_URL,
#                                           "outbound_token":TOKEN, "scopes":["*"], "max_hops":3}
# A direction whose peer already exists on X is left alone, so the script can run again.
#
# Required: A_URL, B_URL (admin API base URLs as this script reaches them), A_KEY, B_KEY.
# Optional: A_NAME (instance-a), B_NAME (instance-b), TEAM (default),
#           A_HOOK_URL / B_HOOK_URL (the hook URL the *other instance* posts to;
#           default ${X_URL}/hooks/${TEAM}/kite), SCOPES (["*"]), MAX_HOPS (3),
#           WAIT_SECONDS (120: how long to wait for both admin APIs to answer).
# Uses only POSIX sh, curl and sed (runs in the curlimages/curl image).
set -eu

: "${A_URL:?A_URL is required}" "${B_URL:?B_URL is required}"
: "${A_KEY:?A_KEY is required}" "${B_KEY:?B_KEY is required}"
A_NAME=${A_NAME:-instance-a}
B_NAME=${B_NAME:-instance-b}
TEAM=${TEAM:-default}
A_URL=${A_URL%/}
B_URL=${B_URL%/}
A_HOOK_URL=${A_HOOK_URL:-$A_URL/hooks/$TEAM/kite}
B_HOOK_URL=${B_HOOK_URL:-$B_URL/hooks/$TEAM/kite}
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

# peer_one FROM_NAME FROM_URL FROM_KEY TO_NAME TO_URL TO_KEY TO_HOOK_URL
peer_one() {
    _fn=$1 _fu=$2 _fk=$3 _tn=$4 _tu=$5 _tk=$6 _th=$7

    api GET "$_fu/api/federation/peers" "$_fk" || fail "listing peers on $_fn: $STATUS $BODY"
    if printf '%s' "$BODY" | tr -d '\n' | grep -q "\"name\"[[:space:]]*:[[:space:]]*\"$_tn\""; then
        say "$_fn already has peer $_tn: left as it is"
        return 0
    fi

    api POST "$_tu/api/federation/tokens" "$_tk" "{\"label\":\"from-$_fn\"}" ||
        fail "minting a token on $_tn: $STATUS $BODY"
    _token=$(json_str token)
    [ -n "$_token" ] || fail "no \"token\" field in $_tn's answer to POST /api/federation/tokens"

    api POST "$_tu/api/federation/trusted-senders" "$_tk" \
        "{\"name\":\"$_fn\",\"inbound_token\":\"$_token\"}" ||
        fail "adding trusted sender $_fn on $_tn: $STATUS $BODY"

    api POST "$_fu/api/federation/peers" "$_fk" \
        "{\"name\":\"$_tn\",\"peer_hook_url\":\"$_th\",\"outbound_token\":\"$_token\",\"scopes\":$SCOPES,\"max_hops\":$MAX_HOPS}" ||
        fail "adding peer $_tn on $_fn: $STATUS $BODY"
    say "$_fn -> $_tn peered (hook $_th)"
}

wait_for "$A_NAME" "$A_URL" "$A_KEY"
wait_for "$B_NAME" "$B_URL" "$B_KEY"
peer_one "$A_NAME" "$A_URL" "$A_KEY" "$B_NAME" "$B_URL" "$B_KEY" "$B_HOOK_URL"
peer_one "$B_NAME" "$B_URL" "$B_KEY" "$A_NAME" "$A_URL" "$A_KEY" "$A_HOOK_URL"
say "done: $A_NAME <-> $B_NAME"
