#!/usr/bin/env bash
# One BENCHMARKS.md row end to end: starts redis-server (or a cluster) and the relay(s)
# on free ports, runs `whispr bench`, prints the bench's figures, the relays' CPU per message
# (utime + stime) and Redis's cost per
# message (INFO commandstats and used_cpu_* before and after), then stops everything.
#
#   benches/redis_row.sh SETUP [whispr bench flags...]
#
# SETUP: memory | redis | two-nodes | cluster1 | cluster3
#   memory     one relay, memory store (the ceiling for the ratios)
#   redis      one relay on one Redis
#   two-nodes  two relays on one Redis; recipients on the first, senders on the second
#   clusterN   one relay on a Redis Cluster of N masters (no replicas), all on this box
# Environment: WHISPR (binary, default target/release/whispr), APPENDFSYNC = no (default:
# appendonly no) | everysec | always (appendonly yes with that fsync policy), REDIS_SERVER
# (the server binary, default redis-server: a valkey-server or a Redis built elsewhere
# takes the same flags).
# Default bench flags: --connections 100 --senders 8 --messages 100000.
set -euo pipefail
setup=${1:?usage: $0 memory|redis|two-nodes|cluster1|cluster3 [bench flags]}
shift
flags=("$@")
[ ${#flags[@]} -eq 0 ] && flags=(--connections 100 --senders 8 --messages 100000)
whispr=${WHISPR:-target/release/whispr}
redis_server=${REDIS_SERVER:-redis-server}
fsync=${APPENDFSYNC:-no}
dir=$(mktemp -d /tmp/whispr-row.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_redis() { for _ in $(seq 400); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done; echo "redis $1 did not start" >&2; exit 1; }
wait_http() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return; sleep 0.05; done; echo "relay $1 did not start" >&2; exit 1; }

persistence=(--save "" --appendonly no)
[ "$fsync" != no ] && persistence=(--save "" --appendonly yes --appendfsync "$fsync")
redis_ports=()
start_redis() { # port, extra args
  local port=$1; shift
  mkdir -p "$dir/r$port"
  "$redis_server" --port "$port" --bind 127.0.0.1 --dir "$dir/r$port" "${persistence[@]}" "$@" \
    --logfile "$dir/r$port/log" &
  pids+=($!)
  redis_ports+=("$port")
  wait_redis "$port"
}

store_lines=()
case $setup in
  memory) ;;
  redis | two-nodes)
    p=$(free_port); start_redis "$p"
    store_lines=('store = "redis"' "redis_url = \"redis://127.0.0.1:$p\"") ;;
  cluster*)
    n=${setup#cluster}; urls=(); seeds=()
    for _ in $(seq "$n"); do
      # A cluster node also listens on its port + 10000 (the cluster bus).
      p=$(free_port); while [ "$p" -gt 55000 ]; do p=$(free_port); done
      start_redis "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-announce-ip 127.0.0.1
      urls+=("redis://127.0.0.1:$p"); seeds+=("127.0.0.1:$p")
    done
    if [ "$n" -eq 1 ]; then
      redis-cli -p "${redis_ports[0]}" cluster addslotsrange 0 16383 >/dev/null
    else
      redis-cli --cluster create "${seeds[@]}" --cluster-yes >/dev/null
    fi
    for _ in $(seq 100); do
      redis-cli -p "${redis_ports[0]}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1
    done
    store_lines=('store = "redis"' "redis_cluster_urls = \"$(IFS=,; echo "${urls[*]}")\"") ;;
  *) echo "unknown setup $setup" >&2; exit 2 ;;
esac

start_relay() { # port
  { cat <<TOML
listen = "127.0.0.1:$1"
log_level = "warn"
max_messages_per_second = 1000000
burst_messages = 1000000
max_messages_per_second_per_ip = 1000000
burst_messages_per_ip = 10000000
max_messages_per_recipient = 1000000
max_connections_per_ip = 200000
max_new_connections_per_second = 100000
max_store_bytes = 4294967296
max_bad_signatures_per_second_per_ip = 1000000
TOML
    printf '%s\n' "${store_lines[@]}"; } > "$dir/relay-$1.toml"
  "$whispr" serve --config "$dir/relay-$1.toml" 2>>"$dir/relay-$1.log" &
  pids+=($!)
  wait_http "$1"
}
a=$(free_port); start_relay "$a"; relay_pid=${pids[-1]}; relay_pids=("$relay_pid")
via=()
if [ "$setup" = two-nodes ]; then
  b=$(free_port); start_relay "$b"; relay_pids+=("${pids[-1]}"); via=(--send-via "http://127.0.0.1:$b")
fi

cpu() { # summed used_cpu_sys + used_cpu_user over every Redis, seconds
  local t=0
  for p in "${redis_ports[@]}"; do
    t=$(redis-cli -p "$p" info cpu | awk -F: -v t="$t" '/^used_cpu_(sys|user):/ {t += $2} END {printf "%.6f", t}')
  done
  echo "${t:-0}"
}
relay_cpu() { # summed utime + stime of every relay, seconds
  local t=0
  for p in "${relay_pids[@]}"; do
    t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{printf "%.6f", t + ($14 + $15) / hz}' "/proc/$p/stat")
  done
  echo "$t"
}
for p in "${redis_ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
before=$(cpu)
relay_before=$(relay_cpu)
load=$(cut -d' ' -f1-3 /proc/loadavg)
report=$("$whispr" bench --server "http://127.0.0.1:$a" "${via[@]}" "${flags[@]}" --relay-pid "$relay_pid" --json)
after=$(cpu)
relay_after=$(relay_cpu)
python3 - "$report" "$before" "$after" "$setup" "$fsync" "$load" "$relay_before" "$relay_after" "${redis_ports[@]}" <<'PY'
import json, subprocess, sys
r = json.loads(sys.argv[1]); before, after = float(sys.argv[2]), float(sys.argv[3])
setup, fsync, load = sys.argv[4], sys.argv[5], sys.argv[6]
relay_s, ports = float(sys.argv[8]) - float(sys.argv[7]), sys.argv[9:]
l = r["latency_ms"]
print(f"{setup} (appendfsync {fsync}; load before {load}): accepted {r['accepted_per_s']:.0f}/s, "
      f"delivered {r['delivered_per_s']:.0f}/s, lost {r['lost']}, duplicates {r['duplicates']}, "
      f"errors {sum(r['errors'].values())}, p50/p90/p99/max {l['p50']}/{l['p90']}/{l['p99']}/{l['max']} ms")
n = max(r["accepted"], 1)
print(f"  relay CPU {1e6 * relay_s / n:.1f} µs/msg (utime + stime of every relay)")
if ports:
    calls, usec = {}, {}
    for p in ports:
        for line in subprocess.run(["redis-cli", "-p", p, "info", "commandstats"],
                                   capture_output=True, text=True).stdout.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[8:].split(":", 1)
                f = dict(kv.split("=") for kv in rest.strip().split(","))
                calls[name] = calls.get(name, 0) + int(f["calls"])
                usec[name] = usec.get(name, 0) + int(f["usec"])
    top = sorted(calls, key=lambda k: -usec[k])[:int(__import__("os").environ.get("TOP", "6"))]
    # Commands a script calls are counted on their own and inside the script's time.
    scripts = sum(usec.get(k, 0) for k in ("evalsha", "eval"))
    print(f"  redis CPU {1e6 * (after - before) / n:.1f} µs/msg (used_cpu_*), "
          f"scripts {scripts / n:.1f} µs/msg (commandstats)")
    print("  per msg: " + ", ".join(f"{k} {calls[k] / n:.2f} calls x {usec[k] / max(calls[k], 1):.1f} µs" for k in top))
PY
