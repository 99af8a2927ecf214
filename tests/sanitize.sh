#!/bin/sh
# make sanitize: every test binary (tests/run.sh) and the randomised fault run
# built with AddressSanitizer + UndefinedBehaviorSanitizer, and any sanitizer
# report fails the run. Why the reports go to files: most tests start the
# workers and the CLI as child processes with their stderr in a log the test
# reads and deletes, so a report of a child (a leak at exit, an overflow in a
# worker the test then SIGTERMs) used to be lost while the test passed. Every
# instrumented process, the tests themselves included, now writes its report
# to $reports/{asan,ubsan}.PID; the run fails when any exists and prints them.
# The fault run keeps its 100,000 events (FAULT_EVENTS, FAULT_SEED pass
# through): under ASan it took 418 s of input and checks at load average
# 15-24, 0 lost, 0 double-applied. SANITIZE_FAULTS=0 skips it.
BUILD=${BUILD:-build/sanitize}
reports=$(mktemp -d /tmp/streamml-sanitize-XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
rc=0
BUILD="$BUILD" tests/run.sh || rc=1
if [ "${SANITIZE_FAULTS:-1}" != 0 ]; then
    STREAMML_BUILD="$BUILD" "$BUILD/faults/fault_run" ||
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
