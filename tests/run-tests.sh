#!/bin/sh
# Run every unit test binary and every end-to-end scenario; print one
# closing line "N passed, N failed, N skipped" and exit non-zero on any
# failure. A test that reports "ok - name # SKIP reason" (TAP's directive:
# the unit harness's SKIP(), camtest.skip()) counts as skipped, not passed.
# Usage: BUILD=build tests/run-tests.sh [--unit-only] [FILTER]
set -u
BUILD=${BUILD:-build}
unit_only=0
[ "${1:-}" = "--unit-only" ] && { unit_only=1; shift; }
filter=${1:-}
passed=0
failed=0
skipped=0
failed_names=""
logdir=$BUILD/test-logs
rm -rf "$logdir/daemons"
mkdir -p "$logdir"
# What each failure printed, also kept in one file (.ci/run repeats it at the end).
failures=$logdir/failures.txt
: >"$failures"

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	name=$(basename "$t")
	case "$name" in *"$filter"*) ;; *) continue ;; esac
	out=$("$t" 2>&1)
	rc=$?
	# "# N passed, N failed" (the fuzz replays) or "..., N skipped" (the harness)
	line=$(printf '%s\n' "$out" | grep -E '^# [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' |
		tail -n 1)
	p=$(printf '%s' "$line" | sed -E 's/^# ([0-9]+) passed.*/\1/')
	f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
	s=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) skipped$/\1/p')
	[ -n "$s" ] || s=0
	[ -n "$p" ] || { p=0; f=1; }
	[ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
	if [ "$f" != 0 ]; then
		failed_names="$failed_names $name"
		printf '%s\n' "$out" | grep -v '^ok - ' | sed "s/^/$name: /" | tee -a "$failures"
	else
		if [ "$s" != 0 ]; then
			echo "unit $name: $p passed, $s skipped"
			printf '%s\n' "$out" | grep -E '^ok - .* # SKIP' | sed "s/^/  $name: /"
		else
			echo "unit $name: $p passed"
		fi
	fi
done

if [ "$unit_only" = 0 ]; then
	for t in tests/e2e/[0-9]*.py; do
		[ -f "$t" ] || continue
		name=$(basename "$t" .py)
		case "$name" in *"$filter"*) ;; *) continue ;; esac
		start=$(date +%s)
		BUILD="$BUILD" timeout 300 python3 "$t" >"$logdir/$name.log" 2>&1
		rc=$?
		secs=$(( $(date +%s) - start ))
		s=$(grep -cE '^ok - .* # SKIP' "$logdir/$name.log")
		p=$(( $(grep -cE '^ok - ' "$logdir/$name.log") - s ))
		f=$(grep -cE '^not ok - ' "$logdir/$name.log")
		[ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
		passed=$((passed + p))
		failed=$((failed + f))
		skipped=$((skipped + s))
		if [ "$f" != 0 ]; then
			failed_names="$failed_names $name"
			{
				echo "e2e $name: FAILED (rc=$rc, ${secs}s); log $logdir/$name.log:"
				# Each failing test with what it printed since the previous
				# result (its traceback); a scenario that died without one
				# shows the end of its log.
				awk '/^ok - /{n=0; next}
				     {buf[n++]=$0}
				     /^not ok - /{s=(n>60)?n-60:0; for(i=s;i<n;i++) print buf[i]; n=0}' \
					"$logdir/$name.log" | sed "s/^/  | /"
				grep -qE '^not ok - ' "$logdir/$name.log" ||
					tail -n 40 "$logdir/$name.log" | sed "s/^/  | /"
				for d in "$logdir"/daemons/"$name"-*; do
					[ -f "$d" ] || continue
					grep -lqE 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:' "$d" &&
						{ echo "  | sanitizer report in $d:"; head -n 40 "$d" | sed "s/^/  | /"; }
				done
			} | tee -a "$failures"
		else
			if [ "$s" != 0 ]; then
				echo "e2e $name: $p passed, $s skipped (${secs}s)"
				grep -E '^ok - .* # SKIP' "$logdir/$name.log" | sed "s/^/  $name: /"
			else
				echo "e2e $name: $p passed (${secs}s)"
			fi
		fi
	done
fi

[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
