#!/bin/sh
# Runs every test binary under $BUILD/tests and prints one summary line.
# Each binary is a cmocka group; its own "[  PASSED  ]" lines are kept.
# Exit status: non-zero if any test failed or any binary crashed.
BUILD=${BUILD:-build}
pass=0; fail=0; crashed=""
export STREAMML_BUILD="$BUILD"
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    log=$(mktemp)
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    pass=$((pass + p)); fail=$((fail + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        crashed="$crashed $name(rc=$rc)"; fail=$((fail + 1))
    fi
    rm -f "$log"
done
# The docs name only commands, options, keys and links that exist.
if /usr/bin/python3 tests/check_docs.py . "$BUILD"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); crashed="$crashed check_docs.py"
fi
[ -n "$crashed" ] && echo "crashed or failed outside a test:$crashed"
# No test may replace a device it was pointed at (issue 22: a rename over
# /dev/null as root broke every later run on the machine).
if [ ! -c /dev/null ]; then
    echo "FATAL: /dev/null is no longer a character device: a test replaced it" \
         "(restore: rm -f /dev/null && mknod -m 666 /dev/null c 1 3)"
    fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
