#!/usr/bin/env bash
# Issue 27 bench rows: P2 (latency -n 50) and P3 (throughput -k 4 -m 25) on debug builds: SQLite, PostgreSQL one node,
# PostgreSQL submit on node A / IDLE on node B.
set -uo pipefail
target="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
bin="${RELAY_BIN:-$target/debug/chatrelay}"; lg="${LOADGEN:-$target/debug/loadgen}"
w="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$w"' EXIT
# RELAYTEST_PG_URL as printed by scripts/pg-cluster.sh start DIR
pgbase="${RELAYTEST_PG_URL:?start scripts/pg-cluster.sh and export RELAYTEST_PG_URL}"; pgbase="${pgbase%/*}"
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
run() { # label smtp imap pid
  local label=$1 s=$2 i=$3 pid=$4
  sleep 2
  echo "== $label"
  timeout 200 $lg --smtp-port $s --imap-port $i --server-pid $pid --timeout 30 --sender-base 1 --rcpt-base 2 latency -n 50 2>&1 | tail -3
  timeout 200 $lg --smtp-port $s --imap-port $i --server-pid $pid --timeout 60 --sender-base 11 --rcpt-base 31 throughput -k 4 -m 25 2>&1 | tail -3
}
rm -rf $w/s $w/p1 $w/a $w/b
read -r pid s i < <(start_node $w/s "")
run "sqlite, one node" $s $i $pid; kill $pid
db=b_$RANDOM; psql $pgbase/chatrelay -qc "CREATE DATABASE $db"
read -r pid s i < <(start_node $w/p1 "[store]
backend = \"postgres\"
url = \"$pgbase/$db\"")
run "postgres, one node" $s $i $pid; kill $pid
db=b_$RANDOM; psql $pgbase/chatrelay -qc "CREATE DATABASE $db"
read -r pa sa ia < <(start_node $w/a "[store]
backend = \"postgres\"
url = \"$pgbase/$db\"")
read -r pb sb ib < <(start_node $w/b "[store]
backend = \"postgres\"
url = \"$pgbase/$db\"")
run "postgres, submit on node A, IMAP on node B" $sa $ib $pa; kill $pa $pb
