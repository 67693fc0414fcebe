#!/bin/bash
# restation VM bench, guest side. Runs as PID 1 (the initrd execs it from the 9p share), reads
# /bench/bench.env written by `cargo xtask vm`, runs the checks, writes one line per check to
# /bench/results.txt and to the console (prefixed "@@ "), then powers the VM off.
#
# Every wait here is a condition polled against a deadline (the guest has no event source a
# shell can block on for "the phone is back"), and the host bounds the whole run as well.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
B=/bench
RESULTS=$B/results.txt
LOGS=$B/logs
mkdir -p "$LOGS"
: >"$RESULTS"
# shellcheck source=/dev/null
. "$B/bench.env"

# --- helpers -----------------------------------------------------------------------------------
ms() { local up rest; read -r up rest </proc/uptime; echo $((10#${up/./} * 10)); }
since() { local d=$(($(ms) - $1)); printf '%d.%01ds' $((d / 1000)) $(((d % 1000) / 100)); }
result() { echo "$*" >>"$RESULTS"; echo "@@ $*"; }
pass() { local name=$1; shift; result PASS "$name" "$*"; }
fail() { local name=$1; shift; result FAIL "$name" "$*"; }
# wait_until SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_until() {
    local deadline=$(($(ms) + $1 * 1000))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(ms)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}
# phone BUSID FIELD: a value of bench.env's P_<busid>_<FIELD> (from the server's identity line).
phone() { local v="P_${1//-/_}_$2"; echo "${!v}"; }
# stop PID: TERM, then KILL after 5 s.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
# first line of a command's output, trimmed for a result line
oneline() { head -c 160 | tr '\n\t' '  ' | sed 's/  */ /g; s/ $//'; }
# apple_pids: the idProduct of every Apple device on the guest's buses.
apple_pids() {
    local d v p
    for d in /sys/bus/usb/devices/*; do
        [ -r "$d/idVendor" ] || continue
        read -r v <"$d/idVendor"
        [ "$v" = 05ac ] || continue
        read -r p <"$d/idProduct"
        echo "$p"
    done
}
apple_count() { apple_pids | wc -l; }
have_apple_count() { [ "$(apple_count)" -eq "$1" ]; }
have_pid_count() { [ "$(apple_pids | grep -c "^$1\$")" -eq "$2" ]; }
# remote busids of the vhci ports in use (the port files are written by `usbip attach`)
attached_busids() {
    local f hub port sta rest b
    for f in /sys/devices/platform/vhci_hcd.*/status*; do
        [ -r "$f" ] || continue
        while read -r hub port sta rest; do
            [ "$hub" = hub ] && continue
            [ "$((10#$sta))" -eq 6 ] || continue
            port=$((10#$port))
            [ -r "/run/vhci_hcd/port$port" ] || continue
            read -r _ _ b <"/run/vhci_hcd/port$port"
            echo "$b"
        done <"$f"
    done
}
# events: the server's JSON lines, shared by the host over 9p
events() { jq -c "select($1)" "$B/events.jsonl" 2>/dev/null; }
event_lines() { wc -l <"$B/events.jsonl" 2>/dev/null || echo 0; }
# events_after N FILTER: matching events after the first N lines
events_after() { tail -n +"$(($1 + 1))" "$B/events.jsonl" 2>/dev/null | jq -c "select($2)" 2>/dev/null; }
needs_server() {
    if [ -n "$BENCH_SERVER_ERROR" ]; then
        fail "$1" "no USB/IP server on the host: $BENCH_SERVER_ERROR"
        return 1
    fi
}
needs_restation() {
    if [ ! -x "$B/restation" ]; then
        fail "$1" "no restation binary in the guest: ${BENCH_RESTATION_ERROR:-not built}"
        return 1
    fi
    needs_server "$1"
}

# --- boot --------------------------------------------------------------------------------------
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/vhci_hcd
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug
hostname bench
pass boot "kernel=$(uname -r) init_at=$(since 0) (kernel+initrd under TCG)"

# --- kernel modules and udev ------------------------------------------------------------------
t0=$(ms)
/usr/lib/systemd/systemd-udevd --daemon >"$LOGS/udevd.log" 2>&1
missing=""
for m in vhci-hcd usbmon virtio_net; do
    modprobe "$m" 2>>"$LOGS/modprobe.log" || missing="$missing $m"
done
loaded=$(lsmod | awk 'NR > 1 { print $1 }' | grep -E '^(vhci_hcd|usbip_core|usbmon|usbcore|9p|9pnet_virtio|virtio_net|ext4)$' | sort | paste -sd, -)
if [ -z "$missing" ] && [ -d /sys/devices/platform/vhci_hcd.0 ] && [ -d /sys/kernel/debug/usb/usbmon ] && pidof systemd-udevd >/dev/null; then
    pass modules "loaded=$loaded udevd=up time=$(since "$t0")"
else
    fail modules "missing=[$missing] loaded=$loaded vhci=$(ls -d /sys/devices/platform/vhci_hcd.* 2>/dev/null | paste -sd, -)"
fi

# --- network to the host (qemu user networking: the host is 10.0.2.2) --------------------------
t0=$(ms)
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
if ! needs_server network; then
    :
elif wait_until 20 timeout 5 bash -c ": <>/dev/tcp/10.0.2.2/$BENCH_USBIP_PORT"; then
    pass network "eth0=10.0.2.15 usbip-server=10.0.2.2:$BENCH_USBIP_PORT reachable time=$(since "$t0")"
else
    fail network "no TCP connection to 10.0.2.2:$BENCH_USBIP_PORT in 20 s ($(ip -br addr show eth0 2>&1 | oneline))"
fi

# --- USB/IP: attach every phone, and keep re-attaching (a mode change re-enumerates) -----------
supervise_attach() {
    local have b
    while :; do
        have=" $(attached_busids | paste -sd' ' -) "
        for b in $BENCH_PHONES; do
            case "$have" in
                *" $b "*) ;;
                *)
                    if usbip --tcp-port "$BENCH_USBIP_PORT" attach -r 10.0.2.2 -b "$b" >>"$LOGS/usbip-attach.log" 2>&1; then
                        echo "$(ms) attached $b" >>"$LOGS/attach-events.log"
                    fi
                    ;;
            esac
        done
        sleep 0.5
    done
}
nphones=$(echo "$BENCH_PHONES" | wc -w)
t0=$(ms)
if needs_server usbip-attach; then
    supervise_attach &
    ATTACH_PID=$!
    if wait_until 120 have_apple_count "$nphones"; then
        pass usbip-attach "phones=$nphones/$nphones busids=$(attached_busids | sort | paste -sd, -) time=$(since "$t0")"
    else
        fail usbip-attach "Apple devices on the bus: $(apple_count)/$nphones after 120 s; attach log: $(tail -n 2 "$LOGS/usbip-attach.log" 2>/dev/null | oneline)"
    fi
fi
lsusb >"$LOGS/lsusb.txt" 2>&1
want_pids=$(for b in $BENCH_PHONES; do phone "$b" PID; done | sort | paste -sd, -)
seen_pids=$(apple_pids | sort | paste -sd, -)
if [ -n "$seen_pids" ] && [ "$seen_pids" = "$want_pids" ]; then
    pass lsusb "05ac devices: $(lsusb -d 05ac: | sed 's/.*ID //' | cut -c1-9 | sort | paste -sd, -)"
else
    fail lsusb "05ac product ids seen [$seen_pids], want [$want_pids]"
fi

# --- irecovery against the recovery and DFU phones -------------------------------------------
field() { sed -n "s/^$1: *//p" | head -n 1; }
check_irecovery_q() {
    local name=$1 busid=$2 want_mode=$3 out rc t0 bad="" f got want
    needs_server "$name" || return
    t0=$(ms)
    out=$(timeout 60 irecovery -i "$(phone "$busid" ECID)" -q 2>&1)
    rc=$?
    echo "$out" >"$LOGS/$name.txt"
    for f in CPID BDID ECID; do
        got=$(field "$f" <<<"$out")
        want=$(phone "$busid" "$f")
        if [ -z "$got" ] || [ $((got)) -ne $((want)) ]; then bad="$bad $f=${got:-none}(want $want)"; fi
    done
    got=$(field MODE <<<"$out")
    [ "${got,,}" = "${want_mode,,}" ] || bad="$bad MODE=${got:-none}(want $want_mode)"
    if [ "$rc" -eq 0 ] && [ -z "$bad" ]; then
        pass "$name" "CPID=$(field CPID <<<"$out") BDID=$(field BDID <<<"$out") ECID=$(field ECID <<<"$out") MODE=$(field MODE <<<"$out") PRODUCT=$(field PRODUCT <<<"$out") time=$(since "$t0")"
    else
        fail "$name" "rc=$rc$bad; output: $(oneline <<<"$out")"
    fi
}
check_irecovery_q irecovery-q-recovery "$BENCH_RECOVERY" recovery
check_irecovery_q irecovery-q-dfu "$BENCH_DFU" dfu

# `irecovery -c` sends a command and prints nothing; its shell reads a getenv answer back (a
# control IN after the command) and prints it on a line of its own.
if needs_server irecovery-getenv; then
    t0=$(ms)
    out=$(printf 'getenv build-version\n/exit\n' | timeout 60 irecovery -i "$(phone "$BENCH_RECOVERY" ECID)" -s 2>&1)
    rc=$?
    echo "$out" >"$LOGS/irecovery-getenv.txt"
    answer=$(tr -d '\r' <<<"$out" | sed 's/^> *//' | grep -xE 'iBoot-[0-9][0-9.]*' | head -n 1)
    if [ -n "$answer" ]; then
        pass irecovery-getenv "build-version=$answer (irecovery -s) time=$(since "$t0")"
    else
        fail irecovery-getenv "rc=$rc no iBoot-<version> answer line; output=[$(oneline <<<"$out")]"
    fi
fi

# irecovery -f FILE, then the host's upload event must carry the file's SHA-256.
check_upload() {
    local name=$1 busid=$2 mode=$3 size=$4 file sha out rc t0 got usbmon_pid mark
    needs_server "$name" || return
    mark=$(event_lines)
    file=/tmp/$name.bin
    head -c "$size" /dev/urandom >"$file"
    sha=$(sha256sum "$file" | cut -d' ' -f1)
    cat /sys/kernel/debug/usb/usbmon/0u >"$LOGS/$name.usbmon.txt" 2>/dev/null &
    usbmon_pid=$!
    t0=$(ms)
    out=$(timeout 120 irecovery -v -i "$(phone "$busid" ECID)" -f "$file" 2>&1)
    rc=$?
    local took=$(($(ms) - t0))
    echo "$out" >"$LOGS/$name.txt"
    # the host writes the event when the phone has the whole file (DFU: at manifestation)
    wait_until 30 eval "events '.event == \"upload\" and .busid == \"$busid\" and .sha256 == \"$sha\"' | grep -q ."
    got=$(events_after "$mark" ".event == \"upload\" and .busid == \"$busid\"" | tail -n 1)
    stop "$usbmon_pid"
    # a DFU phone resets after manifestation and comes back: in the next stage (recovery) when
    # it booted the image, in DFU when it refused it
    local back=""
    if [ "$mode" = dfu ] && [ -n "$got" ]; then
        if wait_until 60 eval "events_after $mark '.event == \"attached\" and .busid == \"$busid\"' | grep -q ."; then
            back=" re-attached=$(events_after "$mark" ".event == \"mode\" and .busid == \"$busid\"" | tail -n 1 | jq -r .mode 2>/dev/null)"
        else
            back=" (not back on the bus in 60 s)"
        fi
    fi
    local urbs
    urbs=$(grep -c ' S ' "$LOGS/$name.usbmon.txt" 2>/dev/null)
    if [ "$(jq -r .sha256 <<<"$got" 2>/dev/null)" = "$sha" ] && [ "$(jq -r .mode <<<"$got" 2>/dev/null)" = "$mode" ]; then
        pass "$name" "bytes=$size sha256=${sha:0:16}… host=$(jq -r '"\(.mode) \(.bytes)B"' <<<"$got") irecovery=${took}ms ($((size * 1000 / (took + 1) / 1024))KiB/s under TCG) rc=$rc usbmon_submits=$urbs$back"
    else
        fail "$name" "rc=$rc file sha256=${sha:0:16}… (to $mode) host event: ${got:-none}; irecovery: $(tr '\r' '\n' <<<"$out" | tail -n 1 | oneline); usbmon last completions: $(grep ' C ' "$LOGS/$name.usbmon.txt" | tail -n 2 | cut -d' ' -f3- | paste -sd'|' -)"
    fi
}
check_upload irecovery-upload-recovery "$BENCH_RECOVERY" recovery 1048576
# DFU on two phones (each leaves DFU after one upload): a size that leaves room for the 16-byte
# suffix in the last 2048-byte block, then a multiple of 2048, where libirecovery sends the
# suffix as a DNLOAD of its own right after the last data block, without a GETSTATUS between.
check_upload irecovery-upload-dfu "$BENCH_DFU" dfu 261000
check_upload irecovery-upload-dfu-aligned "$BENCH_DFU2" dfu 262144

# --- Debian's usbmuxd + libimobiledevice against the normal phone -------------------------------
N1=$BENCH_NORMAL
UDID1=$(phone "$N1" UDID)
MUX_PID=""
listed() { idevice_id -l 2>/dev/null | grep -qx "$1"; }
if needs_server usbmuxd-idevice_id; then
    t0=$(ms)
    usbmuxd -f -v --user usbmux >"$LOGS/usbmuxd.log" 2>&1 &
    MUX_PID=$!
    if wait_until 60 listed "$UDID1"; then
        pass usbmuxd-idevice_id "udid=$UDID1 listed=$(idevice_id -l | paste -sd, -) time=$(since "$t0")"
    else
        fail usbmuxd-idevice_id "udid $UDID1 not listed in 60 s: [$(idevice_id -l 2>&1 | oneline)] usbmuxd: $(tail -n 3 "$LOGS/usbmuxd.log" | oneline)"
    fi
fi
if needs_server ideviceinfo; then
    t0=$(ms)
    pt=$(timeout 60 ideviceinfo -u "$UDID1" -s -k ProductType 2>&1)
    ecid=$(timeout 60 ideviceinfo -u "$UDID1" -s -k UniqueChipID 2>&1)
    want_ecid=$(($(phone "$N1" ECID)))
    if [ "$pt" = "$(phone "$N1" PRODUCT)" ] && [ "$ecid" = "$want_ecid" ]; then
        pass ideviceinfo "ProductType=$pt UniqueChipID=$ecid time=$(since "$t0")"
    else
        fail ideviceinfo "ProductType=[$(oneline <<<"$pt")] (want $(phone "$N1" PRODUCT)) UniqueChipID=[$(oneline <<<"$ecid")] (want $want_ecid)"
    fi
fi
if needs_server ideviceenterrecovery; then
    t0=$(ms)
    before=$(apple_pids | grep -c '^1281$')
    out=$(timeout 60 ideviceenterrecovery "$UDID1" 2>&1)
    rc=$?
    echo "$out" >"$LOGS/ideviceenterrecovery.txt"
    if wait_until 90 have_pid_count 1281 $((before + 1)); then
        reenum=$(since "$t0")
        q=$(timeout 60 irecovery -i "$(phone "$N1" ECID)" -q 2>&1)
        host=$(events ".event == \"mode\" and .busid == \"$N1\"" | tail -n 1)
        if [ "$(field MODE <<<"$q")" = Recovery ]; then
            pass ideviceenterrecovery "busid=$N1 re-enumerated as 05ac:1281 in $reenum; irecovery ECID=$(field ECID <<<"$q") MODE=Recovery; host: $host"
        else
            fail ideviceenterrecovery "a 1281 device appeared but irecovery -q for ECID $(phone "$N1" ECID) says: $(oneline <<<"$q")"
        fi
    else
        fail ideviceenterrecovery "rc=$rc [$(oneline <<<"$out")]; no new 05ac:1281 in 90 s (pids: $(apple_pids | paste -sd, -))"
    fi
fi
[ -n "$MUX_PID" ] && stop "$MUX_PID"

# --- restation on the same stack, with the system usbmuxd stopped -----------------------------
N2=$BENCH_NORMAL2
UDID2=$(phone "$N2" UDID)
R="$B/restation"
SERVE_PID=""
devices_json() { "$R" devices --json --socket /run/restation.sock 2>/dev/null; }
# present_ecids: "ECID(decimal) mode port" of every present phone the daemon lists
present() { devices_json | jq -r '.[] | select(.present) | "\(.id) \(.mode | tostring) \(.port | tostring)"' 2>/dev/null; }
sees_all() {
    local b want line n=0
    local list
    list=$(present) || return 1
    for b in $BENCH_PHONES; do
        want=$(($(phone "$b" ECID)))
        while read -r id _ port; do
            case "$id" in 0x*) ;; *) continue ;; esac
            if [ $((id)) -eq "$want" ] && [ "$port" != null ]; then n=$((n + 1)); break; fi
        done <<<"$list"
    done
    [ "$n" -eq "$nphones" ]
}
if needs_restation restation-devices; then
    t0=$(ms)
    mkdir -p /run/pairs
    RUST_LOG=info "$R" serve --usb --socket /run/restation.sock --usbmuxd-socket /run/mux.sock \
        --pair-records /run/pairs >"$LOGS/restation-serve.log" 2>&1 &
    SERVE_PID=$!
    if wait_until 120 sees_all; then
        pass restation-devices "phones=$nphones $(present | awk '{ printf "%s%s:%s@%s", sep, $1, $2, $3; sep="," }') time=$(since "$t0")"
    else
        fail restation-devices "daemon lists [$(present | paste -sd, -)] after 120 s, want every ECID with a port; log: $(tail -n 3 "$LOGS/restation-serve.log" | oneline)"
    fi
fi
via_restation() { USBMUXD_SOCKET_ADDRESS=UNIX:/run/mux.sock "$@"; }
if [ -n "$SERVE_PID" ]; then
    t0=$(ms)
    want_ecid=$(($(phone "$N2" ECID)))
    info_ok() { [ "$(via_restation ideviceinfo -u "$UDID2" -s -k UniqueChipID 2>/dev/null)" = "$want_ecid" ]; }
    if wait_until 60 info_ok; then
        pass restation-usbmuxd-ideviceinfo "UniqueChipID=$want_ecid ProductType=$(via_restation ideviceinfo -u "$UDID2" -s -k ProductType 2>&1) idevice_id=$(via_restation idevice_id -l 2>&1 | paste -sd, -) time=$(since "$t0")"
    else
        fail restation-usbmuxd-ideviceinfo "want UniqueChipID $want_ecid for $UDID2, got [$(via_restation ideviceinfo -u "$UDID2" -s -k UniqueChipID 2>&1 | oneline)]"
    fi

    t0=$(ms)
    out=$(via_restation timeout 60 ideviceenterrecovery "$UDID2" 2>&1)
    rc=$?
    in_recovery() {
        present | while read -r id mode _; do
            case "$id" in 0x*) [ $((id)) -eq "$want_ecid" ] && [[ "${mode,,}" == *recovery* ]] && echo yes ;; esac
        done | grep -q yes
    }
    if wait_until 90 in_recovery; then
        pass restation-mode-change "ECID $want_ecid followed normal -> recovery in $(since "$t0") ($(present | grep -i "$(printf '%x' "$want_ecid")" | oneline))"
    else
        fail restation-mode-change "rc=$rc [$(oneline <<<"$out")]; daemon lists [$(present | paste -sd, -)]"
    fi
    stop "$SERVE_PID"
else
    needs_restation restation-usbmuxd-ideviceinfo && fail restation-usbmuxd-ideviceinfo "restation serve did not start"
    needs_restation restation-mode-change && fail restation-mode-change "restation serve did not start"
fi

# --- done --------------------------------------------------------------------------------------
[ -n "$ATTACH_PID" ] && kill "$ATTACH_PID" 2>/dev/null
dmesg >"$LOGS/dmesg.txt" 2>&1
echo "@@ DONE uptime=$(since 0)"
sync
echo o >/proc/sysrq-trigger
sleep 30
