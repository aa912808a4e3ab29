#!/bin/sh
# Run each libFuzzer target (built by `make fuzz-build`) for SECONDS, one
# after the other, on a work copy of its seed corpus; print one line per
# target with the executions and exec/s; copy any crash, leak, timeout or
# OOM input into tests/fuzz/regressions/NAME/ and exit non-zero.
#
#   tests/fuzz/run-fuzz.sh FUZZ_DIR SECONDS TARGET...
#   tests/fuzz/run-fuzz.sh --merge FUZZ_DIR 0 TARGET...
#       fold the work corpus FUZZ_DIR/corpus/NAME into tests/fuzz/corpus/NAME
#       (libFuzzer -merge=1 keeps only inputs that add coverage)
#
# Layout under FUZZ_DIR: fuzz_NAME (binaries), corpus/NAME/ (work corpus,
# grows across runs), artifacts/NAME-* (this run's findings), logs/NAME.log.
# Run from the top of the tree.
set -u
merge=0
[ "${1:-}" = "--merge" ] && { merge=1; shift; }
[ $# -ge 3 ] || { echo "usage: $0 [--merge] FUZZ_DIR SECONDS TARGET..." >&2; exit 2; }
dir=$1
secs=$2
shift 2

# The last value of a libFuzzer "stat::NAME: VALUE" line in a log, or "?".
stat_of() {
	v=$(sed -n "s/^stat::$2: *//p" "$1" | tail -n 1)
	echo "${v:-?}"
}

failed=""
for t in "$@"; do
	bin=$dir/fuzz_$t
	seeds=tests/fuzz/corpus/$t
	work=$dir/corpus/$t
	log=$dir/logs/$t.log
	mkdir -p "$work" "$dir/artifacts" "$dir/logs"
	if [ ! -x "$bin" ]; then
		echo "fuzz $t: $bin missing (make fuzz-build)"
		failed="$failed $t"
		continue
	fi

	if [ "$merge" = 1 ]; then
		before=$(ls "$seeds" | wc -l)
		"$bin" -merge=1 "$seeds" "$work" >"$log" 2>&1 || {
			echo "fuzz $t: merge failed; see $log"
			failed="$failed $t"
			continue
		}
		echo "fuzz $t: seed corpus $before -> $(ls "$seeds" | wc -l) inputs"
		continue
	fi

	# Seeds first (same names each run, so copying again is harmless).
	cp "$seeds"/* "$work"/ 2>/dev/null
	rm -f "$dir/artifacts/$t-"*
	dict=""
	[ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
	# shellcheck disable=SC2086 # $dict is one word or none
	"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$dir/artifacts/$t-" $dict "$work" >"$log" 2>&1
	rc=$?

	runs=$(stat_of "$log" number_of_executed_units)
	eps=$(stat_of "$log" average_exec_per_sec)
	new=$(stat_of "$log" new_units_added)
	cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	found=$(ls "$dir/artifacts/$t-"* 2>/dev/null)
	if [ "$rc" = 0 ] && [ -z "$found" ]; then
		echo "fuzz $t: ok, $runs runs in ${secs}s, $eps exec/s, cov ${cov:-?}," \
			"$new new inputs, corpus $(ls "$work" | wc -l)"
		continue
	fi

	failed="$failed $t"
	echo "fuzz $t: FAILED (rc=$rc) after $runs runs, $eps exec/s; log $log"
	grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|FUZZ_ASSERT|^SUMMARY' \
		"$log" | head -n 8 | sed 's/^/  | /'
	for f in $found; do
		mkdir -p "tests/fuzz/regressions/$t"
		name=$(basename "$f" | sed "s/^$t-//")
		cp "$f" "tests/fuzz/regressions/$t/$name"
		echo "  saved tests/fuzz/regressions/$t/$name; reproduce with:"
		echo "    $bin tests/fuzz/regressions/$t/$name"
	done
done

if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed"
	exit 1
fi
echo "fuzz: $# targets, no crash"
