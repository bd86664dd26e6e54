# shellcheck shell=bash
# Two network namespaces joined by a veth pair, for benchmarks that keep the clients' receive
# path off the server's CPU bill. Sourced by bench/run.sh (scenario `netns`) and
# bench/profile-cpu.sh (BENCH_PROFILE_NETNS=1), after scripts/lib.sh; needs root (ip netns,
# veth).
#
# On loopback, a server's `send` runs the client's TCP receive and wake-up in the server's own
# context: the kernel bills a third of a delivery's cost to the sender (bench/PROFILE.md). A
# veth pair alone does not change that (the peer's receive runs in a softirq on the sending
# CPU). With threaded NAPI each side's receive processing runs in a kernel thread pinned to
# its own CPU, as on two machines: the hub's namespace receives on the server CPU, the
# clients' on theirs. (Receive Packet Steering would do it too, but costs the sender an
# inter-processor interrupt per packet batch, which a VM pays as an exit: slower than
# loopback here.) Needs ethtool (installed from Debian when missing).
#
#   netns_up SERVER_CPU CLIENT_CPU   # creates rcb-hub (10.231.0.1) and rcb-cli (10.231.1.1-254)
#   netns_napi_pids rcb-h|rcb-c      # the receive threads of the hub's / clients' side
#   netns_down
#
# Addresses: the hub side 10.231.0.1; the client side 10.231.1.1 .. 10.231.1.254, used as
# source addresses like 127.0.0.x on loopback. Nothing is routed outside the two namespaces.

NETNS_HUB=rcb-hub
NETNS_CLI=rcb-cli
NETNS_HUB_IP=10.231.0.1
NETNS_CLI_NET=10.231.1

netns_down() {
  ip netns del "$NETNS_HUB" 2>/dev/null || true
  ip netns del "$NETNS_CLI" 2>/dev/null || true
}

# netns_napi_pids DEV -> the kernel threads that receive DEV's packets, one per line.
netns_napi_pids() { pgrep "^napi/$1-" || true; }

netns_up() {
  local server_cpu=$1 client_cpu=$2 i
  command -v ip >/dev/null || { echo "netns: ip (iproute2) is required" >&2; return 1; }
  ensure_command ethtool ethtool || return 1
  netns_down
  ip netns add "$NETNS_HUB"
  ip netns add "$NETNS_CLI"
  ip link add rcb-h netns "$NETNS_HUB" type veth peer name rcb-c netns "$NETNS_CLI"
  ip -n "$NETNS_HUB" addr add "$NETNS_HUB_IP/16" dev rcb-h
  {
    for i in $(seq 1 254); do echo "addr add $NETNS_CLI_NET.$i/16 dev rcb-c"; done
  } | ip -n "$NETNS_CLI" -batch -
  local ns dev
  for ns in "$NETNS_HUB" "$NETNS_CLI"; do
    dev=rcb-h; [[ $ns == "$NETNS_CLI" ]] && dev=rcb-c
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$dev" up
  done
  # Each side's receive path in a NAPI thread pinned to its own CPU: GRO on turns on veth's
  # NAPI (used for TCP only when the sending side has no TSO: the benchmarks' frames are
  # small), `threaded` moves its polling from the sender's softirq into a kernel thread.
  local napi
  for ns in "$NETNS_HUB" "$NETNS_CLI"; do
    dev=rcb-h; [[ $ns == "$NETNS_CLI" ]] && dev=rcb-c
    ip netns exec "$ns" ethtool -K "$dev" gro on tso off >/dev/null
    ip netns exec "$ns" sh -c "echo 1 > /sys/class/net/$dev/threaded"
  done
  for napi in $(netns_napi_pids rcb-h); do taskset -pc "$server_cpu" "$napi" >/dev/null; done
  for napi in $(netns_napi_pids rcb-c); do taskset -pc "$client_cpu" "$napi" >/dev/null; done
  # The same accept backlog as the loopback runs would have by default.
  ip netns exec "$NETNS_HUB" sysctl -qw net.core.somaxconn=4096
}
