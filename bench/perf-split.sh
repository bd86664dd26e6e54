# shellcheck shell=bash
# perf_split DATA [PID]: prints "KERNEL RX", the percentages of the samples in DATA (of process
# PID only, when given) that ran in the kernel, and inclusively under net_rx_action: the softirq
# work of the *receiving* side of a loopback send, which Linux runs in the sender's context (on a
# network it runs on the receiver's machine). Needs kernel call chains in DATA (`perf record -g`
# or `--call-graph dwarf`). Sourced by bench/profile-cpu.sh and bench/run.sh.
perf_split() {
  local data=$1 pid=${2:-}
  # Counted from `perf script`, one block per sample (a "PID" line, then its frames, leaf
  # first): `perf report --pid` drops samples of multi-process recordings on this perf.
  perf script -i "$data" -F pid,ip,sym,dso 2>/dev/null | awk -v want="$pid" '
    function done_sample() { if (in_s) { n++; k += kern; r += rx }; in_s = 0 }
    /^ *[0-9]+ *$/ { done_sample(); if (want == "" || $1 == want) { in_s = 1; first = 1; kern = 0; rx = 0 }; next }
    in_s && NF > 0 { if (first) { kern = ($0 ~ /\[kernel\.kallsyms\]\)$/); first = 0 }; if ($2 == "net_rx_action") rx = 1 }
    END { done_sample(); if (n) printf "%.2f %.2f\n", 100 * k / n, 100 * r / n; else print "0 0" }'
}
