#!/usr/bin/env bash
# peers.sh -- VELA's benchmark harness: VELA and the established tunnels, measured alike.
#
# Started from shared/bench/peers.sh (the project's peer anchors) and extended with
# the vela-tap and vela-tun systems.  Usually run through `deno task bench` (bench/run.ts),
# which installs nothing unasked, skips absent systems with a reason and adds the
# VELA / best-peer ratios; this script can also be run alone (as root).
#
# Builds two network namespaces (pb-<pid>-a, pb-<pid>-b) joined by a veth pair, brings
# up one tunnel system at a time between them, runs iperf3 through it and prints
# one table row per system.  See README.md next to this file.
#
# Env knobs:
#   PEERS="none vxlan ..."  systems to run (default: all, see ALL_PEERS)
#   JUMBO=1                 veth MTU 9000, tunnel MTU 8900 (default 1500/1400)
#   TUN_MTU=, VETH_MTU=     override MTUs directly
#   T=5                     seconds per TCP test;  UDP_T=3 seconds per UDP step
#   LOCK=/tmp/bench.lock    every measurement runs under `flock $LOCK ...`
#   OUT=dir                 where results/logs go (default ./results/tmp/<stamp>-mtu<N>)
#   VELA_DIR=dir            the VELA checkout whose main.ts runs (default: this file's ..)
#   VELA_ARGS="..."         extra arguments for both VELA daemons, e.g. "--underlay libc"
#   UDP_ARGS="..."          extra arguments for the UDP iperf3 client, e.g. "-w 4M" (the receiver's
#                           socket buffer too); default none, as in every committed result
#   PIN=1                   each namespace on its own core: every process in a (tunnel, iperf3
#                           client) on CPU 0, every process in b on CPU 1; default 0 (the scheduler
#                           places them), as in every committed result
#   DENO=path               the deno binary (default: deno on PATH)
#   SMOKE=1                 one-shot check: only `none` and `vela-tap`, T=1, UDP_T=1,
#                           a single UDP step, a private lock (never waits for another run)
#
# Addresses: underlay 198.18.1.1 (a) / 198.18.1.2 (b),
#            tunnel   198.19.1.1 (a) / 198.19.1.2 (b).  IPv6 is disabled
#            inside the namespaces so no link-local / ND traffic appears.
set -uo pipefail

SELF=$(readlink -f "$0")
HERE=$(dirname "$SELF")

ALL_PEERS="none vxlan vela-tap vela-tun vela-aes vela-chacha vtun quicktun fastd tinc openvpn-tun openvpn-tap
  wireguard-go tinc-aes fastd-salsa openvpn-sk openvpn-gcm"
EXTRA_PEERS="n2n"   # run with PEERS="..."
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  PEERS="none vela-tap"; T=1; UDP_T=1
fi
PEERS=${PEERS:-$ALL_PEERS}
JUMBO=${JUMBO:-0}
if [ "$JUMBO" = 1 ]; then
  VETH_MTU=${VETH_MTU:-9000}; TUN_MTU=${TUN_MTU:-8900}
else
  VETH_MTU=${VETH_MTU:-1500}; TUN_MTU=${TUN_MTU:-1400}
fi
T=${T:-5}
UDP_T=${UDP_T:-3}
LOCK=${LOCK:-/tmp/bench.lock}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$HERE/results/tmp/$STAMP-mtu$TUN_MTU}
NSA=pb-$$-a; NSB=pb-$$-b              # namespace names carry our PID
WGA=pbwg$$a; WGB=pbwg$$b              # wireguard-go's socket path (/var/run/wireguard) is global
VELA_DIR=${VELA_DIR:-$(dirname "$HERE")}
VELA_ARGS=${VELA_ARGS:-}
UDP_ARGS=${UDP_ARGS:-}
PIN=${PIN:-0}
CLIENT_PIN=""; [ "$PIN" = 1 ] && CLIENT_PIN="taskset -c 0"
DENO=${DENO:-deno}
VELA_CTL_A=/tmp/vela-bench-$$-a.sock; VELA_CTL_B=/tmp/vela-bench-$$-b.sock
UA=198.18.1.1; UB=198.18.1.2          # underlay (veth)
TA=198.19.1.1; TB=198.19.1.2          # tunnel inner
TA6=fd00:198:19:1::1                  # VELA's inner IPv6 (it always sets one); b gets ::2
UDP_LEN=$((TUN_MTU - 28))             # iperf3 UDP payload that fits the tunnel MTU unfragmented
HZ=$(getconf CLK_TCK)
export NSA NSB T UDP_T UDP_LEN UDP_ARGS CLIENT_PIN

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for c in ip iperf3 jq bc ping flock ss; do
  command -v $c >/dev/null || { echo "missing $c (apt-get install iproute2 iperf3 jq bc iputils-ping util-linux)" >&2; exit 1; }
done
mkdir -p "$OUT"
RUN=$(mktemp -d /tmp/pb-bench.XXXXXX)  # keys + configs (throw-away), removed at exit
[ "$SMOKE" = 1 ] && LOCK=$RUN/lock      # smoke: never waits for (or blocks) a real run
STARTED=()

log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- cleanup ---
kill_ours() {
  # PIDs we spawned, plus anything still living inside our own namespaces
  # (forked children such as vtund's session process).  Killed by PID only.
  local pids=("${STARTED[@]}") ns p
  for ns in $NSA $NSB; do
    [ -e /run/netns/$ns ] && pids+=($(ip netns pids $ns 2>/dev/null))
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null; done
  STARTED=()
}
ns_down() {
  kill_ours
  local ns
  for ns in $NSA $NSB; do [ -e /run/netns/$ns ] && ip netns del $ns; done
  rm -f /var/run/wireguard/$WGA.sock /var/run/wireguard/$WGB.sock "$VELA_CTL_A" "$VELA_CTL_B"
  return 0
}
final_cleanup() { ns_down; rm -rf "$RUN"; }
trap final_cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 141' PIPE   # our reader (bench/run.ts) is gone: stop, and clean up on the way out

# ------------------------------------------------------------------ setup ---
ns_up() {
  ns_down
  ip netns add $NSA && ip netns add $NSB || return 1
  local ns
  for ns in $NSA $NSB; do
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n $ns link set lo up
  done
  ip link add pb-a0 netns $NSA type veth peer name pb-b0 netns $NSB || return 1
  ip -n $NSA link set pb-a0 mtu $VETH_MTU up
  ip -n $NSB link set pb-b0 mtu $VETH_MTU up
  ip -n $NSA addr add $UA/24 dev pb-a0
  ip -n $NSB addr add $UB/24 dev pb-b0
}
# spawn NS LOGFILE CMD...   -> LASTPID ('ip netns exec' execs, so $! is the daemon)
spawn() {
  local ns=$1 lf=$2; shift 2
  ip netns exec "$ns" "$@" >"$lf" 2>&1 </dev/null &
  LASTPID=$!
  STARTED+=("$LASTPID")
}
# addr NS DEV IP: set MTU, address, up
ifup() { ip -n "$1" link set "$2" mtu "$TUN_MTU" up && ip -n "$1" addr add "$3/24" dev "$2"; }
wait_dev() { local i; for i in $(seq 50); do ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
wait_ping() {
  local i
  for i in $(seq ${1:-40}); do
    ip netns exec $NSA ping -q -c1 -W1 "$DST" >/dev/null 2>&1 &&
      ip netns exec $NSB ping -q -c1 -W1 "$SRC" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# ------------------------------------------------------------ measurement ---
# These run inside `flock $LOCK bash -c ...`, hence exported.
proc_ticks() {  # sum utime+stime (clock ticks) of PIDs; fields after "comm)"
  local p s=0 v
  for p in "$@"; do
    v=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | awk '{print $12+$13}') && [ -n "$v" ] && s=$((s+v))
  done
  echo $s
}
sys_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat; }  # user+nice+system+irq+softirq
m_tcp() {  # OUTPREFIX REVFLAG PIDS...
  local out=$1 rev=$2; shift 2
  local c0 s0 c1 s1
  c0=$(proc_ticks "$@"); s0=$(sys_ticks)
  timeout $((T + 20)) ip netns exec $NSA $CLIENT_PIN iperf3 -c "$DST" -t "$T" $rev -J --connect-timeout 3000 \
    >"$out.json" 2>"$out.err"
  c1=$(proc_ticks "$@"); s1=$(sys_ticks)
  echo "$((c1-c0)) $((s1-s0))" >"$out.cpu"
}
m_udp() {  # OUTPREFIX RATE
  # shellcheck disable=SC2086 # UDP_ARGS is split into words on purpose
  timeout $((UDP_T + 20)) ip netns exec $NSA $CLIENT_PIN iperf3 -c "$DST" -u -b "$2" -l "$UDP_LEN" -t "$UDP_T" -J \
    --connect-timeout 3000 $UDP_ARGS >"$1.json" 2>"$1.err"
}
export -f proc_ticks sys_ticks m_tcp m_udp
# locked FN ARGS...: `flock $LOCK FN ARGS` in the background + wait, so that a
# signal reaches our trap (and cleanup) at once instead of after the test.
locked() { flock "$LOCK" bash -c '"$0" "$@"' "$@" & wait $!; }

tunnel_pids() {  # processes inside our namespaces except iperf3/ping
  local p
  for p in $(ip netns pids $NSA) $(ip netns pids $NSB); do
    case "$(cat /proc/$p/comm 2>/dev/null)" in iperf3|ping|"") ;; *) echo "$p";; esac
  done
}

# --------------------------------------------------------------- peers ------
# Each peer_X sets LAYER CRYPTO DST SRC and starts its daemons; non-zero = fail.
# Configs only ever name 198.18.1.x (underlay) and 198.19.1.x (tunnel).

peer_none() {
  LAYER=-; CRYPTO=none; DST=$UB; SRC=$UA
  # same packet size as the tunnels: the veth itself gets the tunnel MTU
  ip -n $NSA link set pb-a0 mtu $TUN_MTU && ip -n $NSB link set pb-b0 mtu $TUN_MTU
}

peer_vxlan() {
  LAYER=L2; CRYPTO=none; DST=$TB; SRC=$TA
  ip -n $NSA link add pb-vx type vxlan id 42 local $UA remote $UB dstport 4789 dev pb-a0 || return 1
  ip -n $NSB link add pb-vx type vxlan id 42 local $UB remote $UA dstport 4789 dev pb-b0 || return 1
  ifup $NSA pb-vx $TA && ifup $NSB pb-vx $TB
}

peer_wireguard-go() {
  LAYER=L3; CRYPTO=chacha20poly1305; DST=$TB; SRC=$TA
  local d=$RUN/wg side ns dev me them ka kb
  mkdir -p $d
  wg genkey >$d/a.key; wg pubkey <$d/a.key >$d/a.pub
  wg genkey >$d/b.key; wg pubkey <$d/b.key >$d/b.pub
  for side in a b; do
    if [ $side = a ]; then ns=$NSA; me=$UA; them=$UB; else ns=$NSB; me=$UB; them=$UA; fi
    spawn $ns "$OUT/$PEER/wg-go-$side.log" env WG_PROCESS_FOREGROUND=1 \
      WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error wireguard-go "$([ $side = a ] && echo $WGA || echo $WGB)"
  done
  wait_dev $NSA $WGA && wait_dev $NSB $WGB || return 1
  for _ in $(seq 20); do [ -S /var/run/wireguard/$WGA.sock ] && [ -S /var/run/wireguard/$WGB.sock ] && break; sleep 0.2; done
  ip netns exec $NSA wg set $WGA private-key $d/a.key listen-port 51820 \
    peer "$(cat $d/b.pub)" endpoint $UB:51820 allowed-ips 198.19.1.0/24 || return 1
  ip netns exec $NSB wg set $WGB private-key $d/b.key listen-port 51820 \
    peer "$(cat $d/a.pub)" endpoint $UA:51820 allowed-ips 198.19.1.0/24 || return 1
  ifup $NSA $WGA $TA && ifup $NSB $WGB $TB
}

peer_openvpn() {  # DEVTYPE [sk|gcm]
  local devtype=$1 mode=${2:-none} side ns me them tip ifc crypt o
  LAYER=$([ $devtype = tap ] && echo L2 || echo L3); CRYPTO=none; DST=$TB; SRC=$TA
  if [ $mode = sk ]; then   # classic static-key mode
    CRYPTO=aes256cbc+sha256
    openvpn --genkey secret $RUN/ovpn.key >/dev/null 2>&1 || return 1
  elif [ $mode = gcm ]; then   # TLS mode, no CA: a self-signed certificate per side, pinned by fingerprint
    CRYPTO=aes-256-gcm
    for side in a b; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=$side \
        -keyout $RUN/ovpn-$side.key -out $RUN/ovpn-$side.crt >/dev/null 2>&1 || { echo "openssl req failed"; return 1; }
      openssl x509 -in $RUN/ovpn-$side.crt -noout -fingerprint -sha256 | cut -d= -f2 >$RUN/ovpn-$side.fp || return 1
    done
  fi
  for side in a b; do
    if [ $mode = sk ]; then
      crypt="--secret $RUN/ovpn.key $([ $side = a ] && echo 0 || echo 1) --cipher AES-256-CBC --auth SHA256"
    elif [ $mode = gcm ]; then   # b is the TLS server, a the client; AES-256-GCM is the only data cipher
      o=$([ $side = a ] && echo b || echo a)
      crypt="$([ $side = a ] && echo --tls-client || echo --tls-server --dh none) --cert $RUN/ovpn-$side.crt"
      crypt="$crypt --key $RUN/ovpn-$side.key --peer-fingerprint $(cat $RUN/ovpn-$o.fp)"
      crypt="$crypt --data-ciphers AES-256-GCM --cipher AES-256-GCM"
    else
      crypt="--cipher none --auth none"   # p2p, no TLS, no key: cleartext like VELA
    fi
    if [ $side = a ]; then ns=$NSA; me=$UA; them=$UB; tip=$TA; else ns=$NSB; me=$UB; them=$UA; tip=$TB; fi
    if [ $devtype = tun ]; then
      ifc="$tip $([ $side = a ] && echo $TB || echo $TA)"
    else
      ifc="$tip 255.255.255.0"
    fi
    spawn $ns "$OUT/$PEER/openvpn-$side.log" openvpn --dev pb-ovpn --dev-type $devtype \
      --proto udp --local $me --lport 1194 --remote $them --rport 1194 \
      --ifconfig $ifc --tun-mtu $TUN_MTU $crypt --disable-dco \
      --ping 10 --verb 3 --script-security 0 --writepid "$RUN/openvpn-$side.pid"
  done
  # TLS mode opens the device only once the handshake has agreed on the data cipher
  [ $mode = gcm ] && { wait_dev $NSA pb-ovpn && wait_dev $NSB pb-ovpn ||
    { echo "pb-ovpn did not appear on both sides: $(tail -qn1 "$OUT/$PEER"/openvpn-*.log | tr '\n' ' ')"; return 1; }; }
  return 0
}
peer_openvpn-tun() { peer_openvpn tun; }
peer_openvpn-tap() { peer_openvpn tap; }
peer_openvpn-sk() { peer_openvpn tun sk; }
peer_openvpn-gcm() { peer_openvpn tun gcm; }

peer_tinc() {
  LAYER=L2; CRYPTO=${TINC_CIPHER:-none}; DST=$TB; SRC=$TA
  local side me tip d other ns
  for side in a b; do
    d=$RUN/tinc-$side; mkdir -p $d/hosts
    openssl genrsa -traditional -out $d/rsa_key.priv 2048 2>/dev/null || return 1
  done
  for side in a b; do
    d=$RUN/tinc-$side
    if [ $side = a ]; then me=$UA; tip=$TA; other=b; else me=$UB; tip=$TB; other=a; fi
    cat >$d/tinc.conf <<EOF
Name = $side
Mode = switch
DeviceType = tap
Interface = pb-tinc
AddressFamily = ipv4
BindToAddress = $me
Port = 655
ConnectTo = $other
EOF
    cat >$d/tinc-up <<EOF
#!/bin/sh
ip link set \$INTERFACE mtu $TUN_MTU up
ip addr add $tip/24 dev \$INTERFACE
EOF
    chmod +x $d/tinc-up
    { echo "Address = $me"; echo "Port = 655"; echo "Cipher = ${TINC_CIPHER:-none}";
      echo "Digest = ${TINC_DIGEST:-none}"; echo "Compression = 0";
      openssl rsa -in $d/rsa_key.priv -RSAPublicKey_out 2>/dev/null; } >$RUN/host-$side
  done
  for side in a b; do
    cp $RUN/host-a $RUN/tinc-$side/hosts/a; cp $RUN/host-b $RUN/tinc-$side/hosts/b
    ns=$([ $side = a ] && echo $NSA || echo $NSB)
    spawn $ns "$OUT/$PEER/tincd-$side.log" tincd -c $RUN/tinc-$side -D -d1 \
      --pidfile=$RUN/tinc-$side/pid
  done
}

peer_fastd() {
  LAYER=L2; CRYPTO=${FASTD_METHOD:-null}; DST=$TB; SRC=$TA
  local side me them tip ns o d=$RUN/fastd
  mkdir -p $d
  for side in a b; do
    fastd --generate-key --machine-readable >$d/$side.sec 2>/dev/null || return 1
    printf 'secret "%s";\n' "$(cat $d/$side.sec)" >$d/$side.secconf
    fastd --show-key --machine-readable --config $d/$side.secconf >$d/$side.pub 2>/dev/null || return 1
  done
  for side in a b; do
    if [ $side = a ]; then ns=$NSA; me=$UA; them=$UB; tip=$TA; o=b; else ns=$NSB; me=$UB; them=$UA; tip=$TB; o=a; fi
    cat >$d/$side.conf <<EOF
log level warn;
mode tap;
interface "pb-fastd";
method "${FASTD_METHOD:-null}";
bind $me:10000;
secret "$(cat $d/$side.sec)";
mtu $TUN_MTU;
on up sync "ip link set \$INTERFACE up; ip addr add $tip/24 dev \$INTERFACE";
peer "$o" {
  key "$(cat $d/$o.pub)";
  remote $them:10000;
}
EOF
    spawn $ns "$OUT/$PEER/fastd-$side.log" fastd --config $d/$side.conf
  done
}

peer_tinc-aes() { TINC_CIPHER=aes-256-cbc TINC_DIGEST=sha256 peer_tinc; }
peer_fastd-salsa() { FASTD_METHOD=salsa2012+umac peer_fastd; }

peer_quicktun() {
  # quicktun reads its settings from IF_QT_* environment variables (ifupdown style)
  LAYER=L2; CRYPTO=none; DST=$TB; SRC=$TA
  local side ns me them
  for side in a b; do
    if [ $side = a ]; then ns=$NSA; me=$UA; them=$UB; else ns=$NSB; me=$UB; them=$UA; fi
    spawn $ns "$OUT/$PEER/quicktun-$side.log" env IFACE=pb-qt IF_QT_INTERFACE=pb-qt \
      IF_QT_TUN_MODE=0 IF_QT_PROTOCOL=raw IF_QT_LOCAL_ADDRESS=$me IF_QT_LOCAL_PORT=2998 \
      IF_QT_REMOTE_ADDRESS=$them IF_QT_REMOTE_PORT=2998 quicktun
  done
  wait_dev $NSA pb-qt && wait_dev $NSB pb-qt || { echo "quicktun device pb-qt did not appear"; return 1; }
  ifup $NSA pb-qt $TA && ifup $NSB pb-qt $TB
}

peer_vtun() {
  LAYER=L2; CRYPTO=none; DST=$TB; SRC=$TA
  local side tip
  for side in a b; do
    tip=$([ $side = a ] && echo $TA || echo $TB)
    cat >$RUN/vtund-$side.conf <<EOF
options {
  port 5000;
  timeout 10;
  ip /usr/sbin/ip;
}
default {
  compress no;
  encrypt no;
  speed 0;
}
pbtest {
  passwd pbbench;
  type ether;
  proto udp;
  keepalive yes;
  device pb-vtun;
  up {
    ip "link set %% mtu $TUN_MTU up";
    ip "addr add $tip/24 dev %%";
  };
}
EOF
  done
  spawn $NSB "$OUT/$PEER/vtund-server.log" vtund -n -s -f $RUN/vtund-b.conf -L $UB -P 5000
  sleep 0.5
  spawn $NSA "$OUT/$PEER/vtund-client.log" vtund -n -f $RUN/vtund-a.conf -P 5000 pbtest $UB
}

peer_n2n() {
  # n2n v1 needs a supernode: run it locally in pb-a (no outside server).
  LAYER=L2; CRYPTO=twofish; DST=$TB; SRC=$TA
  spawn $NSA "$OUT/$PEER/supernode.log" supernode -l 7654
  sleep 0.3
  spawn $NSA "$OUT/$PEER/edge-a.log" edge -d pb-n2n -a $TA -s 255.255.255.0 -c pbbench \
    -k pbbenchkey -l $UA:7654 -p 7655 -M $TUN_MTU
  spawn $NSB "$OUT/$PEER/edge-b.log" edge -d pb-n2n -a $TB -s 255.255.255.0 -c pbbench \
    -k pbbenchkey -l $UA:7654 -p 7655 -M $TUN_MTU
}

peer_vela() {  # MODE (tap|tun)
  # VELA as real processes: this checkout's main.ts (VELA_DIR), a listener in b and an initiator in a.
  # The initiator's --mtu sets the link MTU on both ends (both propose, the smaller wins); its
  # --address 198.19.1.1/30 gives the listener the other host of the pair, 198.19.1.2/30.
  local mode=$1 extra=() i mtu_a mtu_b
  LAYER=$([ "$mode" = tun ] && echo L3 || echo L2); CRYPTO=none; DST=$TB; SRC=$TA
  [ -f "$VELA_DIR/main.ts" ] || { echo "no VELA checkout at $VELA_DIR (main.ts missing)"; return 1; }
  read -ra extra <<<"$VELA_ARGS"
  # VELA always gives its interfaces an IPv6 pair (derived, or the --address below), so IPv6 is
  # turned back on in both namespaces for VELA (only link-local and this fd00::/126 pair exist).
  for i in $NSA $NSB; do
    ip netns exec $i sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
  done
  spawn $NSB "$OUT/$PEER/vela-listen.log" env -C "$VELA_DIR" "$DENO" run --allow-all main.ts \
    --listen --insecure-accept-any --control "$VELA_CTL_B" "${extra[@]}"
  for i in $(seq 100); do   # up to 10 s for deno to start and bind the listener's port
    ip netns exec $NSB ss -lun 2>/dev/null | grep -q ':4455 ' && break
    kill -0 "$LASTPID" 2>/dev/null || { echo "the VELA listener exited: $(tail -n1 "$OUT/$PEER/vela-listen.log")"; return 1; }
    sleep 0.1
  done
  spawn $NSA "$OUT/$PEER/vela-init.log" env -C "$VELA_DIR" "$DENO" run --allow-all main.ts \
    --peer $UB --vid 1 --mode "$mode" --mtu $TUN_MTU --address $TA/30 --address $TA6/126 --control "$VELA_CTL_A" "${extra[@]}"
  wait_dev $NSA vela1 && wait_dev $NSB vela1 || {
    echo "vela1 did not appear on both sides: $(tail -qn1 "$OUT/$PEER"/vela-*.log | tr '\n' ' ')"; return 1; }
  for i in $(seq 50); do   # the listener's side is configured by the handshake
    mtu_a=$(ip -n $NSA -j link show vela1 | jq -r '.[0].mtu')
    mtu_b=$(ip -n $NSB -j link show vela1 | jq -r '.[0].mtu')
    [ "$mtu_a" = "$TUN_MTU" ] && [ "$mtu_b" = "$TUN_MTU" ] && return 0
    sleep 0.2
  done
  echo "vela1 MTU is $mtu_a (a) / $mtu_b (b), not $TUN_MTU"; return 1
}
peer_vela-tap() { peer_vela tap; }
peer_vela-tun() { peer_vela tun; }
vela_keyed() {  # MODE CIPHER: VELA with a key (vela genkey), every frame sealed with CIPHER
  [ -f "$RUN/vela.key" ] || (cd "$VELA_DIR" && "$DENO" run --allow-all main.ts genkey >"$RUN/vela.key") || return 1
  chmod 600 "$RUN/vela.key"
  local saved=$VELA_ARGS status
  VELA_ARGS="--key-file $RUN/vela.key --cipher $2 $VELA_ARGS"
  peer_vela "$1"; status=$?
  VELA_ARGS=$saved; CRYPTO=$2
  return $status
}
peer_vela-aes() { vela_keyed tap aes-256-gcm; }
peer_vela-chacha() { vela_keyed tap chacha20-poly1305; }

# ---------------------------------------------------------------- driver ----
jqn() { jq -r "$1 // empty" "$2" 2>/dev/null; }
udp_res() {  # JSON -> "delivered_pps loss%" (receiver side)
  jq -r '.end.sum_received | select(.seconds > 0) |
    "\((.packets - .lost_packets) / .seconds | floor) \(.lost_percent)"' "$1" 2>/dev/null
}
HDR=$(printf '%-13s %-3s %-17s %8s %8s %6s %11s %10s %8s %8s  %s' \
  system lyr crypto tcp_fwd tcp_rev retr udp_max_pps udp_1%_pps tun_s/GB sys_s/GB note)
UNITS=$(printf '%-13s %-3s %-17s %8s %8s %6s %11s %10s %8s %8s' '' '' '' Mbit/s Mbit/s fwd '(loss%)' '<1%loss' 'fwd' 'fwd')

peer_needs() {  # the programs a system needs (bench/run.ts knows their Debian packages)
  case $1 in
    wireguard-go) echo "wireguard-go wg";;
    openvpn-gcm) echo "openvpn openssl";;
    openvpn*) echo openvpn;;
    tinc*) echo "tincd openssl";;
    fastd*) echo fastd;;
    quicktun) echo quicktun;;
    vtun) echo vtund;;
    n2n) echo "edge supernode";;
    vela-*) echo "$DENO";;
  esac
}

run_peer() {
  PEER=$1; LAYER=?; CRYPTO=?; DST=; SRC=
  local d=$OUT/$PEER note="" c missing=""
  mkdir -p "$d"
  if ! declare -F "peer_$PEER" >/dev/null; then row "unknown peer"; return; fi
  for c in $(peer_needs "$PEER"); do command -v "$c" >/dev/null || missing="$missing $c"; done
  if [ -n "$missing" ]; then row "SKIP: not installed:$missing"; return; fi
  if ! ns_up; then row "FAIL: namespace setup"; return; fi
  if ! "peer_$PEER" >"$d/setup.log" 2>&1; then
    row "FAIL: setup ($(tail -n1 "$d/setup.log"))"; ns_down; return
  fi
  export DST
  if ! wait_ping 40; then
    local why; why=$(cat "$d"/*.log 2>/dev/null | grep -iE 'error|fail|cannot|unknown|invalid' | head -n1 | cut -c1-90)
    row "FAIL: no ping through tunnel in 20s ${why:+($why)}"; ns_down; return
  fi
  spawn $NSB "$d/iperf3-server.log" iperf3 -s
  for _ in $(seq 20); do ip netns exec $NSB ss -ltn 2>/dev/null | grep -q ':5201 ' && break; sleep 0.1; done
  if [ "$PIN" = 1 ]; then  # every thread of every process in a namespace (children inherit it)
    for p in $(ip netns pids $NSA); do taskset -a -p -c 0 "$p" >/dev/null; done
    for p in $(ip netns pids $NSB); do taskset -a -p -c 1 "$p" >/dev/null; done
  fi
  local pids; pids=$(tunnel_pids | tr '\n' ' ')
  echo "$pids" >"$d/tunnel_pids"
  for p in $pids; do echo "$p $(tr '\0' ' ' </proc/$p/cmdline)"; done >"$d/tunnel_procs"

  # TCP forward (a -> b) and reverse (b -> a), CPU sampled around each
  locked m_tcp "$d/tcp_fwd" "" $pids
  locked m_tcp "$d/tcp_rev" "-R" $pids
  TF=$(jqn '.end.sum_received.bits_per_second' "$d/tcp_fwd.json")
  TR=$(jqn '.end.sum_received.bits_per_second' "$d/tcp_rev.json")
  RETR=$(jqn '.end.sum_sent.retransmits' "$d/tcp_fwd.json")
  local bytes ct st
  bytes=$(jqn '.end.sum_received.bytes' "$d/tcp_fwd.json")
  read -r ct st <"$d/tcp_fwd.cpu"
  if [ -n "$bytes" ] && [ "$bytes" -gt 0 ]; then
    if [ -n "$pids" ]; then TCPU=$(echo "scale=3; $ct/$HZ/($bytes/1000000000)" | bc); else TCPU=kern; fi
    SCPU=$(echo "scale=3; $st/$HZ/($bytes/1000000000)" | bc)
  else TCPU=-; SCPU=-; fi

  # UDP: unlimited rate (-b 0) -> max delivered pps.  If that lost >= 1%,
  # offer paced fixed rates (multiples x of that pps): x=1.0, then x1.5 steps up
  # while loss stays < 1%, or, if x=1.0 already fails, steps down 0.8/0.6/0.4/0.25/0.1
  # until one passes; then two geometric bisection steps between the highest
  # passing and the lowest failing x (a grid of about 10%, not 20-25%).
  # Report the highest delivered pps with < 1% loss.
  locked m_udp "$d/udp_max" 0
  UMAX=-; U1=-
  local pps lp f rate maxpps best="" i
  udp_step() {  # FACTOR -> sets pps lp, returns 0 when loss < 1%
    rate=$(echo "$maxpps*$1*$UDP_LEN*8/1" | bc)
    [ "$rate" -gt 0 ] || return 2
    locked m_udp "$d/udp_x$1" "$rate"
    read -r pps lp < <(udp_res "$d/udp_x$1.json") || return 1
    [ -n "${pps:-}" ] && [ "$(echo "$lp < 1" | bc)" = 1 ]
  }
  passed() { [ -z "$best" ] || [ "$pps" -gt "$best" ] && best=$pps; lo=$1; }
  read -r pps lp < <(udp_res "$d/udp_max.json")
  if [ -n "${pps:-}" ]; then
    UMAX="$pps($(printf '%.1f' "$lp"))"; maxpps=$pps
    if [ "$(echo "$lp < 1" | bc)" = 1 ]; then best=$pps   # sender-limited, no loss
    elif [ "$SMOKE" = 1 ]; then note="${note}smoke: one UDP step, $(printf '%.1f' "$lp")% lost; "
    else
      local lo="" hi=""
      for f in 1.0 1.5 2.25 3.4 5.1 7.6; do
        if udp_step $f; then passed $f; else hi=$f; break; fi
      done
      if [ -z "$lo" ]; then
        for f in 0.8 0.6 0.4 0.25 0.1; do
          if udp_step $f; then passed $f; break; else hi=$f; fi
        done
      fi
      if [ -n "$lo" ] && [ -n "$hi" ]; then
        for i in 1 2; do
          f=$(echo "scale=3; sqrt($lo*$hi)/1" | bc)
          if udp_step $f; then passed $f; else hi=$f; fi
        done
      fi
    fi
    U1=${best:--}
  fi
  local dead=""
  for p in $pids; do kill -0 "$p" 2>/dev/null || dead="$dead $(grep "^$p " "$d/tunnel_procs" | cut -d' ' -f2)"; done
  [ -n "$dead" ] && note="${note}daemon died:$dead (see $d/*.log); "
  [ "${UMAX%%(*}" = 0 ] && { UMAX=0; U1=0; note="${note}UDP: nothing delivered; "; }
  [ -z "${TF:-}" ] || [ "$(echo "${TF:-0} < 1000000" | bc)" = 1 ] && note="${note}TCP: no data; "
  # socket snapshot (e.g. to see that a daemon's data really went over UDP)
  ip netns exec $NSA ss -tuanpi >"$d/sockets-a.txt" 2>&1
  ip netns exec $NSB ss -tuanpi >"$d/sockets-b.txt" 2>&1
  row "$note"
  ns_down
}
row() {
  local mb='-' mr='-'
  [ -n "${TF:-}" ] && mb=$(printf '%.0f' "$(echo "$TF/1000000" | bc -l)")
  [ -n "${TR:-}" ] && mr=$(printf '%.0f' "$(echo "$TR/1000000" | bc -l)")
  local line
  line=$(printf '%-13s %-3s %-17s %8s %8s %6s %11s %10s %8s %8s  %s' "$PEER" "$LAYER" "$CRYPTO" \
    "$mb" "$mr" "${RETR:--}" "${UMAX:--}" "${U1:--}" "${TCPU:--}" "${SCPU:--}" "$1")
  echo "$line"; echo "$line" >>"$OUT/table.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$PEER" "$LAYER" "$CRYPTO" "$mb" "$mr" \
    "${RETR:--}" "${UMAX:--}" "${U1:--}" "${TCPU:--}" "${SCPU:--}" "$1" >>"$OUT/table.tsv"
  TF=; TR=; RETR=; UMAX=; U1=; TCPU=; SCPU=
}

{
  echo "# peers.sh $STAMP  host=$(hostname) kernel=$(uname -r) cpus=$(nproc)  veth_mtu=$VETH_MTU tun_mtu=$TUN_MTU udp_len=$UDP_LEN T=${T}s UDP_T=${UDP_T}s tcp_cc=$(sysctl -n net.ipv4.tcp_congestion_control) vela=$(git -C "$VELA_DIR" describe --always --dirty 2>/dev/null || echo '?') vela_args=${VELA_ARGS:-none}${UDP_ARGS:+ udp_args=${UDP_ARGS// /_}}$([ "$PIN" = 1 ] && echo " pin=1") smoke=$SMOKE"
  echo "$HDR"; echo "$UNITS"
} | tee "$OUT/table.txt"
for p in $PEERS; do
  log "== $p"
  run_peer "$p"
done
log "results in $OUT"
