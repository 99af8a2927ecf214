#!/bin/sh
# make sanitize: every test binary (tests/run.sh) and the randomised fault run
# built with AddressSanitizer + UndefinedBehaviorSanitizer, and any sanitizer
# report fails the run. Why the reports go to files: most tests start the
# workers and the CLI as child processes with their stderr in a log the test
# reads and deletes, so a report of a child (a leak at exit, an overflow in a
# worker the test then SIGTERMs) used to be lost while the test passed. Every
# instrumented process, the tests themselves included, now writes its report
# to $reports/{asan,ubsan}.PID; the run fails when any exists and prints them.
# FAULT_EVENTS (default here 20,000, as the fault run is ~5x slower under
# ASan) and FAULT_SEED pass through; SANITIZE_FAULTS=0 skips the fault run.
BUILD=${BUILD:-build/sanitize}
reports=$(mktemp -d /tmp/streamml-sanitize-XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
rc=0
BUILD="$BUILD" tests/run.sh || rc=1
if [ "${SANITIZE_FAULTS:-1}" != 0 ]; then
    STREAMML_BUILD="$BUILD" FAULT_EVENTS="${FAULT_EVENTS:-20000}" "$BUILD/faults/fault_run" ||
        { echo "fault run failed under the sanitizers"; rc=1; }
fi
n=0
for f in "$reports"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    echo "==== sanitizer report $(basename "$f") ===="
    cat "$f"
done
if [ "$n" -gt 0 ]; then
    echo "$n sanitizer report(s) (kept in $reports): each is a defect to fix at its cause"
    rc=1
else
    rm -rf "$reports"
    echo "no sanitizer report"
fi
exit $rc
