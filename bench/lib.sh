# shellcheck shell=bash
# The bench scripts' common preamble, sourced (bash, from the repository
# root): `. bench/lib.sh NAME`. It gives
#   $tmp          a fresh folder /tmp/streamml-NAME-XXXXXX, removed on exit;
#   pids          the processes the script started (pids+=($!)): each is
#                 killed and reaped on exit, Ctrl-C or TERM, so no broker or
#                 redis-server outlives a run;
#   $PY           the system python3;
#   bench_before_rm  when the script defines it, run on exit after the
#                 processes are stopped and before $tmp is removed;
#   free_port     a port the kernel gives (bind to port 0), never a guess;
#   ticks PID     its CPU time, user+sys, in clock ticks (/proc; no spaces in
#                 its comm), and $TCK the ticks per second;
#   med X...      the median of the values (the upper one of an even count);
#   txn_events N USERS   N limits.sh transaction events as JSON lines, user
#                 i*7919 mod USERS (every user seen N/USERS times).
PY=/usr/bin/python3
tmp=$(mktemp -d "/tmp/streamml-$1-XXXXXX")
pids=()
bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ! declare -F bench_before_rm >/dev/null || bench_before_rm
    rm -rf "$tmp"
}
trap bench_cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# shellcheck disable=SC2034 # used by the scripts that source this
TCK=$(getconf CLK_TCK)
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
txn_events() {
    $PY - "$1" "$2" <<'PYEOF'
import json, sys
n, users = int(sys.argv[1]), int(sys.argv[2]); t = 1_700_000_000_000
for i in range(n):
    t += 1000
    print(json.dumps({"event_id": f"b{i}", "user_id": f"u{(i * 7919) % users}", "event_time": t,
                      "amount": 500 + i % 2000, "income": 80 + i % 200, "expenses": 40 + i % 50,
                      "term_months": 12 + 12 * (i % 5), "age": 20 + i % 50, "home": "rent"}))
PYEOF
}
