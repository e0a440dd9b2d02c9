#!/usr/bin/env bash
# Run every fuzz target for a bounded time and print what each did.
#
#   fuzz/run.sh [seconds per target] [target...]     (make fuzz: FUZZ_SECONDS=60)
#
# Each target starts from its seeds (fuzz/corpus/<target>, read only) and a
# working corpus (fuzz/corpus-run/<target>, not committed, kept between
# runs). A crash leaves its input in fuzz/artifacts/<target>/ and makes the
# script fail; keep it as a regression (fuzz/regressions/ and
# tests/fuzz_regressions.rs). Needs the nightly toolchain and cargo-fuzz.
set -uo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(compile_raw compile_structured decide cookie_open set_cookie cli)
fi
cargo +nightly fuzz build || exit 2
mkdir -p logs
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t"
    echo "== $t: $seconds s"
    # -timeout: a hang guard for one input, generous for a busy machine.
    cargo +nightly fuzz run "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=60 -print_final_stats=1 \
        >"logs/$t.log" 2>&1
    rc=$?
    last="$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(find "corpus-run/$t" -type f | wc -l)"
    if [ $rc -ne 0 ]; then
        failed=1
        grep -E 'panicked|SUMMARY|Test unit written|^thread' "logs/$t.log" | head -20
        summary+=("$(printf '%-20s FAILED (rc %s) see fuzz/logs/%s.log' "$t" "$rc" "$t")")
    else
        summary+=("$(printf '%-20s execs %-10s cov %-6s ft %-6s corpus %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp")")
    fi
    echo "${summary[-1]}"
done
echo "== summary ($seconds s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
