#!/bin/sh
# Builds and runs the libFuzzer targets of tests/fuzz (make fuzz).
#   tools/fuzz.sh BUILD SECONDS TARGET...
# BUILD holds libstreamml.a compiled by clang with -fsanitize=fuzzer-no-link,
# address,undefined. Each target starts from its committed corpus
# (tests/fuzz/corpus/<name>, never modified) plus what earlier runs found
# (BUILD/corpus/<name>), runs SECONDS seconds, and reports its executions.
# A crash leaves its input under BUILD/crashes/<name>/ and fails the run.
set -u
BUILD=$1; SECS=$2; shift 2
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
LIBS="$(pkg-config --libs rdkafka avro-c hiredis jansson openblas libmicrohttpd libcurl yaml-0.1 \
        libprotobuf-c libpng libjpeg) -lm -lpthread"
CFLAGS="$(pkg-config --cflags rdkafka avro-c hiredis jansson openblas libmicrohttpd libcurl \
        libprotobuf-c libpng libjpeg) -O1 -g -std=c11 -D_GNU_SOURCE $(for d in common/*/; do printf -- "-iquote %s " "$d"; done)-I$BUILD/gen"
status=0; summary=""
for t in "$@"; do
    name=${t#fuzz_}
    bin="$BUILD/fuzz/$t"
    mkdir -p "$BUILD/fuzz" "$BUILD/corpus/$name" "$BUILD/crashes/$name"
    # shellcheck disable=SC2086
    clang $SAN $CFLAGS "tests/fuzz/$t.c" "$BUILD/libstreamml.a" $LIBS -o "$bin" || exit 1
    log="$BUILD/fuzz/$t.log"
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" -max_total_time="$SECS" -rss_limit_mb=2560 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$BUILD/crashes/$name/" \
        "$BUILD/corpus/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ $rc -ne 0 ]; then
        status=1
        echo "$t: FAILED (rc=$rc), see $log and $BUILD/crashes/$name/"
        grep -m3 -E "ERROR|SUMMARY|runtime error" "$log"
    fi
    summary="$summary$t: ${runs:-?} executions in ${SECS}s, ${cov:-cov: ?}, rc=$rc
"
done
printf "%s" "$summary"
exit $status
