#!/usr/bin/env bash
# Issue 27 bench rows (nothing is asserted): P2 (latency -n 50) and P3 (throughput -k 4 -m 25)
# on SQLite, PostgreSQL one node, PostgreSQL submit on node A / IMAP on node B; then the capacity
# figures of docs/scale-out.md: CPU-seconds per message of each node and of PostgreSQL (which
# load on a shared machine changes less than wall times), commits and WAL bytes per message,
# P3 through three nodes at once (every node hears every other's NOTIFY), and IDLE_CONNS idle
# IMAP connections on node B (memory per connection) with the cross-node EXISTS latency
# (SMTP on A) while they idle; last, node 2's P2 latency while node 1 is flooded with
# deliveries or attacked with the worst IMAP commands (bench/hostile.py).
#
#   out="$(scripts/pg-cluster.sh start /tmp/x/pg)"; export "$out"; bench/scaleout.sh
#
# RELAY_BIN, LOADGEN (default $CARGO_TARGET_DIR/debug/…), IDLE_CONNS (default 1000), SKIP_BASE=1
# (no P2/P3 rows), SKIP_CAPACITY=1 (no CPU, three-node and idle-connection figures).
# Loopback only; every process it starts is stopped on exit.
set -uo pipefail
target="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
bin="${RELAY_BIN:-$target/debug/chatrelay}"; lg="${LOADGEN:-$target/debug/loadgen}"
idle_conns="${IDLE_CONNS:-1000}"
w="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$w"' EXIT
ulimit -n "$(ulimit -Hn)"
# RELAYTEST_PG_URL as printed by scripts/pg-cluster.sh start DIR
pgbase="${RELAYTEST_PG_URL:?start scripts/pg-cluster.sh and export RELAYTEST_PG_URL}"; pgbase="${pgbase%/*}"
pgdata="$(psql "$pgbase/chatrelay" -Atc 'SHOW data_directory')"
pgpid="$(head -1 "$pgdata/postmaster.pid")"
hz="$(getconf CLK_TCK)"
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $bin, $(psql "$pgbase/chatrelay" -Atc 'SHOW server_version') fsync=$(psql "$pgbase/chatrelay" -Atc 'SHOW fsync') synchronous_commit=$(psql "$pgbase/chatrelay" -Atc 'SHOW synchronous_commit')"
start_node() { # dir extra -> prints "pid smtp imaps"
  local dir=$1 extra=$2
  mkdir -p $dir/data; head -c 32 $w/secret > $dir/data/secret.key
  read -r -a p < <(python3 -c 'import socket
ps=[]
for _ in range(8):
  s=socket.socket(); s.bind(("127.0.0.1",0)); ps.append(s.getsockname()[1]); s.close()
print(" ".join(map(str,ps)))')
  cat > $dir/c.toml <<T
mail_domain = "relay.test"
data_dir = "$dir/data"
max_load_1m = 100000.0
min_available_memory = "1B"
min_free_disk_space = "1B"
limits.new_accounts_burst = 100000
max_user_send_per_minute = 100000
max_user_send_burst_size = 100000
$extra
[listen]
smtp = "127.0.0.1:${p[0]}"
submission = "127.0.0.1:${p[1]}"
submissions = "127.0.0.1:${p[2]}"
imap = "127.0.0.1:${p[3]}"
imaps = "127.0.0.1:${p[4]}"
http = "127.0.0.1:${p[5]}"
https = "127.0.0.1:${p[6]}"
metrics = "127.0.0.1:${p[7]}"
[delivery]
resolver = "127.0.0.1:9"
[push]
notify_url = ""
T
  RUST_LOG=warn $bin serve --config $dir/c.toml 2>$dir/log & echo "$! ${p[1]} ${p[4]}"
}
head -c 32 /dev/urandom > $w/secret
pgconf() { printf '[store]\nbackend = "postgres"\nurl = "%s"\n' "$1"; }
newdb() { local db=b_$RANDOM$RANDOM; psql "$pgbase/chatrelay" -qc "CREATE DATABASE $db"; echo "$pgbase/$db"; }

# CPU ticks (user + system) of a process, its threads included.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# PostgreSQL: the postmaster, its live children and those that exited (cutime + cstime).
pgticks() {
  local t c
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pgpid/stat")
  for c in $(ps -o pid= --ppid "$pgpid"); do t=$((t + $(ticks "$c"))); done
  echo "$t"
}
# Write transactions (transaction ids handed out; pg_stat_database's counts arrive late) and the
# WAL position.
pgstat() { psql "$1" -Atc "SELECT txid_current(), pg_current_wal_lsn()"; }

run() { # label smtp imap pid
  local label=$1 s=$2 i=$3 pid=$4
  sleep 2
  echo "== $label"
  timeout 200 $lg --smtp-port $s --imap-port $i --server-pid $pid --timeout 30 --sender-base 1 --rcpt-base 2 latency -n 50 2>&1 | tail -3
  timeout 200 $lg --smtp-port $s --imap-port $i --server-pid $pid --timeout 60 --sender-base 11 --rcpt-base 31 throughput -k 4 -m 25 2>&1 | tail -3
}

# P3 (-k 4 -m 100 = 400 messages: CPU ticks are 10 ms) against node i of "smtp:imap:pid" triples, all at once, with the
# CPU it cost each node and PostgreSQL. url: the database (for commits and WAL), - for SQLite.
cpu_p3() { # label url triple...
  local label=$1 url=$2; shift 2
  local -a before=() pids=() lgs=()
  local k=0 t pg0 pg1 st0 st1 n=$(( $# * 400 )) start end
  for t in "$@"; do pids+=("${t##*:}"); done
  # Accounts exist before the clock starts (first logins cost a password hash each).
  k=0; for t in "$@"; do IFS=: read -r s i p <<<"$t"
    timeout 200 $lg --smtp-port $s --imap-port $i --timeout 60 --sender-base $((200 + 40*k)) --rcpt-base $((220 + 40*k)) throughput -k 4 -m 1 >/dev/null 2>&1; k=$((k+1)); done
  sleep 2
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  pg0=$(pgticks); [ "$url" = - ] || st0=$(pgstat "$url"); start=$(date +%s.%N)
  k=0; for t in "$@"; do IFS=: read -r s i p <<<"$t"
    timeout 300 $lg --smtp-port $s --imap-port $i --timeout 60 --sender-base $((200 + 40*k)) --rcpt-base $((220 + 40*k)) throughput -k 4 -m 100 >"$w/p3.$k" 2>&1 &
    lgs+=($!); k=$((k+1)); done
  wait "${lgs[@]}"; end=$(date +%s.%N)
  sleep 2
  pg1=$(pgticks); [ "$url" = - ] || st1=$(pgstat "$url")
  echo "== $label: $n messages in $(python3 -c "print('%.1f' % ($end - $start))") s"
  for k in "${!lgs[@]}"; do grep "accepted in" "$w/p3.$k" | sed "s/^ */  node $((k+1)): /"; done
  local cpus="" tot=0 d
  for k in "${!pids[@]}"; do d=$(( $(ticks "${pids[$k]}") - ${before[$k]} )); tot=$((tot + d)); cpus="$cpus node $((k+1)) $(python3 -c "print('%.1f' % ($d / $hz / $n * 1000))") ms;"; done
  if [ "$url" = - ]; then
    echo "  CPU per message:$cpus"; return
  fi
  IFS='|' read -r c0 l0 <<<"$st0"; IFS='|' read -r c1 l1 <<<"$st1"
  local wal; wal=$(psql "$url" -Atc "SELECT pg_wal_lsn_diff('$l1', '$l0')")
  echo "  CPU per message:$cpus nodes together $(python3 -c "print('%.1f' % ($tot / $hz / $n * 1000))") ms; PostgreSQL $(python3 -c "print('%.2f' % (($pg1 - $pg0) / $hz / $n * 1000))") ms"
  echo "  PostgreSQL per message: $(python3 -c "print('%.2f' % (($c1 - $c0 - 1) / $n))") write transactions, $(python3 -c "print('%.0f' % ($wal / $n))") WAL bytes (the nodes' background work included)"
}

if [ -z "${SKIP_BASE:-}" ]; then
  read -r pid s i < <(start_node $w/s "")
  run "sqlite, one node" $s $i $pid
  cpu_p3 "sqlite, one node, CPU" - "$s:$i:$pid"; kill $pid
  url=$(newdb)
  read -r pid s i < <(start_node $w/p1 "$(pgconf "$url")")
  run "postgres, one node" $s $i $pid
  cpu_p3 "postgres, one node, CPU" "$url" "$s:$i:$pid"; kill $pid
  url=$(newdb)
  read -r pa sa ia < <(start_node $w/a "$(pgconf "$url")")
  read -r pb sb ib < <(start_node $w/b "$(pgconf "$url")")
  run "postgres, submit on node A, IMAP on node B" $sa $ib $pa; kill $pa $pb
fi

# Two and three nodes of one database, P3 through each at once.
url=$(newdb)
read -r p1 s1 i1 < <(start_node $w/n1 "$(pgconf "$url")")
read -r p2 s2 i2 < <(start_node $w/n2 "$(pgconf "$url")")
sleep 2
p3=""
if [ -z "${SKIP_CAPACITY:-}" ]; then
# Node B's cost of the NOTIFY fan-out alone: P3 through A while B only listens.
b0=$(ticks $p2)
cpu_p3 "postgres, P3 through node A, node B listening" "$url" "$s1:$i1:$p1"
echo "  node B (listening only): $(python3 -c "print('%.2f' % (($(ticks $p2) - $b0) / $hz / 404 * 1000))") ms CPU per message"
read -r p3 s3 i3 < <(start_node $w/n3 "$(pgconf "$url")")
sleep 2
cpu_p3 "postgres, three nodes, P3 through each at once" "$url" "$s1:$i1:$p1" "$s2:$i2:$p2" "$s3:$i3:$p3"

# Idle connections per node: IDLE_CONNS IDLE sessions on node B, deliveries through node A; first
# as new accounts (first login creates them), then again as a reconnect of existing ones (what a
# node's death or a balancer's restart causes on the nodes that take its clients).
for pass in "new accounts" "reconnect"; do
  echo "== postgres, $idle_conns idle IMAP connections on node B ($pass), SMTP on node A"
  b0=$(ticks $p2); pg0=$(pgticks)
  timeout 900 $lg --smtp-port $s1 --imap-port $i2 --server-pid $p2 --timeout 120 --sender-base 1 --rcpt-base 2 \
    fanout -c "$idle_conns" --idle-fmt "idle{n:05d}@{domain}" --settle 2 -n 20 2>&1 | grep -v "^#"
  echo "  CPU per connection (TLS, LOGIN, SELECT, IDLE; 20 deliveries included): node B $(python3 -c "print('%.2f' % (($(ticks $p2) - $b0) / $hz / $idle_conns * 1000))") ms, PostgreSQL $(python3 -c "print('%.2f' % (($(pgticks) - $pg0) / $hz / $idle_conns * 1000))") ms"
done
fi

# Hostile load on node 1, a well-behaved client on node 2 (SMTP and IMAP there): P2 latency
# quiet, during a delivery flood through node 1 (loadgen P3, 16 senders), and during the
# issue-26 attack (bench/hostile.py: 8 connections of the worst IMAP commands) on node 1. The
# nodes share only PostgreSQL: what node 2's client feels is what the flood costs the database.
port_of() { sed -n "s/^$2 = \"127.0.0.1:\([0-9]*\)\"/\1/p" "$1/c.toml"; }
p2row() { # phase
  timeout 300 $lg --smtp-port $s2 --imap-port $i2 --server-pid $p2 --timeout 60 --sender-base 5 --rcpt-base 6 \
    latency -n 50 --interval 0.02 2>&1 | grep idle_exists_ms | sed "s/^ */  $1: /"
}
echo "== hostile load on node 1, P2 on node 2"
p2row "quiet"
timeout 300 $lg --smtp-port $s1 --imap-port $i1 --timeout 120 --sender-base 500 --rcpt-base 540 throughput -k 16 -m 200 >$w/flood 2>&1 &
flood=$!; sleep 1
p2row "delivery flood on node 1"
kill $flood 2>/dev/null; wait $flood 2>/dev/null
grep "accepted in" $w/flood | sed 's/^ */  (the flood: /; s/$/)/'
here="$(cd "$(dirname "$0")" && pwd)"
python3 "$here/hostile.py" attack --imap "$(port_of $w/n1 imap)" --imaps "$i1" \
  --user "hostile01@relay.test" --password "bench-password" --ready "$w/ready" 2>"$w/attack.log" &
attacker=$!
for _ in $(seq 600); do [ -f "$w/ready" ] && break; sleep 0.1; done
if [ -f "$w/ready" ]; then p2row "8 hostile IMAP connections on node 1"; else echo "  attackers did not start: $(tail -3 $w/attack.log)"; fi
kill $attacker 2>/dev/null; wait $attacker 2>/dev/null
kill $p1 $p2 $p3
