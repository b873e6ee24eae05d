#!/usr/bin/env bash
# Fuzzes kite-wire's parsers of untrusted input with cargo-fuzz (libFuzzer + ASan).
#
# NOT part of CI (.ci/run does not call it): it is slow (a full build plus FUZZ_SECONDS per target).
# Run it by hand before releases or after touching wire/src:
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh       # longer
#   scripts/fuzz.sh chain_parse scope_compile   # only these targets
#
# Targets (fuzz/fuzz_targets/):
#   cloudevent_parse    the whole ingest path: headers + body on a kite, plain or signed hook
#                       (event::build_event) -> stored event -> forwarded bytes
#                       (fed::forward_text, fed::stored_text) -> a peer's and a third
#                       instance's copy (build_event on their kite hook)
#   signature_verify    signature::verify (X-Kite-Signature)
#   scope_compile       scope::ScopeSet
#   chain_parse         fed::parse_chain, fed::FedInfo::read, fed::forward
#   provider_signature  provider::verify and its header parsers
#   federation_bodies   what another server sends: accept request and answer, heartbeat,
#                       key query and answer, backfill request and page, descriptor
#                       (peering::read), invitation strings
# Targets run one after another, one process each (no -jobs/-workers).
#
# Needs only a stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address),
# which RUSTC_BOOTSTRAP=1 allows on stable. Set FUZZ_SANITIZER=none to build without ASan.
# cargo-fuzz is installed from crates.io if missing.
#
# Corpora grow in fuzz/corpus/<target>/ (checked-in seeds are in fuzz/seeds/<target>/),
# crashing inputs land in fuzz/artifacts/<target>/, logs in fuzz/target/fuzz-logs/; all
# three are gitignored. Reproduce a crash with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/crash-...
#
# Exit status: 0 if every target ran clean, 1 if any crashed, timed out or failed to build.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$fuzz"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${targets[*]} (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

logs="$fuzz/target/fuzz-logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dirs=("$fuzz/corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("$fuzz/seeds/$t")
    flags=(-max_total_time="$seconds" -timeout=25 -print_final_stats=1)
    [ -f "dicts/$t.dict" ] && flags+=(-dict="$fuzz/dicts/$t.dict")
    echo "==> $t for ${seconds}s"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$t" "${dirs[@]}" -- "${flags[@]}" \
        >"$logs/$t.log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)"
    if [ "$status" -eq 0 ]; then
        summary+=("$t: ok, ${execs:-?} execs")
    else
        failed+=("$t")
        summary+=("$t: FAILED (exit $status), ${execs:-?} execs, log $logs/$t.log")
        grep -E "panicked at|^Error|ERROR: libFuzzer|SUMMARY|Test unit written to" \
            "$logs/$t.log" | head -n 20 || true
    fi
done

echo
echo "==> fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
