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
# DFU on two phones (each resets after one upload): a size that leaves room for the 16-byte
# suffix in the last 2048-byte block, then a multiple of 2048, where libirecovery sends the
# suffix as a DNLOAD of its own right after the last data block, without a GETSTATUS between.
check_upload irecovery-upload-dfu "$BENCH_DFU" dfu 261000
check_upload irecovery-upload-dfu-aligned "$BENCH_DFU2" dfu 262144

# --- wire captures: libirecovery and restation's host code upload the same file ---------------
# vm-guest-tool (built on the host, xtask/guest-tool) records the bus through the binary usbmon
# interface into pcap files in /bench/wire; `cargo xtask vm` compares them after the run.
T=$B/vm-guest-tool
WIRE=$B/wire
mkdir -p "$WIRE"
# secs MS: milliseconds as seconds with one decimal
secs() { printf '%d.%01d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
# usb_dev TEXT: "busnum devnum" of the Apple device whose serial string contains TEXT (an
# iBoot serial's ECID:<hex>, or a normal phone's UDID), case-insensitively
usb_dev() {
    local d s
    for d in /sys/bus/usb/devices/*; do
        [ -r "$d/serial" ] && [ -r "$d/idVendor" ] || continue
        [ "$(cat "$d/idVendor")" = 05ac ] || continue
        s=$(cat "$d/serial" 2>/dev/null)
        if [[ "${s^^}" == *"${1^^}"* ]] || [[ "${s^^}" == *"${1//-/}"* ]]; then
            echo "$(cat "$d/busnum") $(cat "$d/devnum")"
            return 0
        fi
    done
    return 1
}
ecid_text() { printf 'ECID:%016X' "$(($1))"; }
CAP_PID=""
# capture NAME BUS DEVICE COMMAND...: runs COMMAND while usbmon records BUS; keeps the pcap and
# a .meta line (the device of interest, the command's exit status) in $WIRE.
capture() {
    local name=$1 bus=$2 dev=$3 rc out
    shift 3
    if [ ! -x "$T" ]; then
        echo "rc=127 error=no vm-guest-tool" >"$WIRE/$name.meta"
        return 127
    fi
    "$T" usbmon --bus "$bus" --out "/tmp/$name.pcap" 2>"$LOGS/$name.usbmon.log" &
    CAP_PID=$!
    wait_until 10 test -s "/tmp/$name.pcap"
    out=$("$@" 2>&1)
    rc=$?
    sleep 0.5
    stop "$CAP_PID"
    cp "/tmp/$name.pcap" "$WIRE/$name.pcap"
    echo "$out" >"$LOGS/$name.txt"
    echo "bus=$bus device=$dev rc=$rc usbmon=[$(tail -n 1 "$LOGS/$name.usbmon.log" | oneline)] out=[$(tr '\r' '\n' <<<"$out" | tail -n 1 | oneline)]" >"$WIRE/$name.meta"
    return $rc
}
# wire_upload NAME ECID FILE TOOL: one upload under capture
wire_upload() {
    local name=$1 ecid=$2 file=$3 tool=$4 dev bus addr
    if ! dev=$(usb_dev "$(ecid_text "$ecid")"); then
        echo "rc=1 error=no device with ECID $ecid on the bus" >"$WIRE/$name.meta"
        return 1
    fi
    read -r bus addr <<<"$dev"
    case $tool in
        irecovery) capture "$name" "$bus" "$addr" timeout 120 irecovery -i "$ecid" -f "$file" ;;
        restation) capture "$name" "$bus" "$addr" timeout 120 "$T" upload --bus "$bus" --address "$addr" --file "$file" ;;
    esac
}
if needs_server wire-captures && [ -x "$T" ]; then
    "$T" pattern --bytes "$BENCH_WIRE_DFU_BYTES" >/tmp/wire-dfu.bin
    "$T" pattern --bytes "$BENCH_WIRE_RECOVERY_BYTES" >/tmp/wire-recovery.bin
    wire_upload wire-dfu-irecovery "$(phone "$BENCH_DFU3" ECID)" /tmp/wire-dfu.bin irecovery
    wire_upload wire-dfu-restation "$(phone "$BENCH_DFU4" ECID)" /tmp/wire-dfu.bin restation
    wire_upload wire-recovery-irecovery "$(phone "$BENCH_RECOVERY" ECID)" /tmp/wire-recovery.bin irecovery
    wire_upload wire-recovery-restation "$(phone "$BENCH_RECOVERY" ECID)" /tmp/wire-recovery.bin restation
fi

# --- throughput: the same large file to the same recovery phone, restation vs irecovery -------
# both as a technician runs them: `restation irecv send FILE --ecid X`, `irecovery -i X -f FILE`
# cpu_of OUT COMMAND...: runs COMMAND (output to OUT); prints "rc user+sys" of it (bash's
# `times` in a subshell: the CPU seconds of the children it waited for).
cpu_of() {
    local out=$1
    shift
    (
        "$@" >"$out" 2>&1
        rc=$?
        # `times` itself, not in a pipeline: a forked shell has no children's times
        times >"$out.times"
        tail -n 1 "$out.times" | awk -v rc="$rc" '{
            n = 0
            for (i = 1; i <= NF; i++) { split($i, p, "m"); sub("s", "", p[2]); n += p[1] * 60 + p[2] }
            printf "%d %.2f\n", rc, n }'
    )
}
mbps() { awk -v b="$1" -v ms="$2" 'BEGIN { printf "%.3f", b / (ms > 0 ? ms : 1) / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
if needs_restation throughput-upload && [ -x "$T" ]; then
    size=$((BENCH_UPLOAD_MIB * 1048576))
    ecid=$(phone "$BENCH_RECOVERY" ECID)
    "$T" pattern --bytes "$size" >/tmp/throughput.bin
    up_event() {
        events_after "$1" ".event == \"upload\" and .busid == \"$BENCH_RECOVERY\" and .sha256 == \"$BENCH_UPLOAD_SHA256\"" | grep -q .
    }
    bad=""
    mark=$(event_lines)
    t0=$(ms)
    read -r rc_r cpu_r <<<"$(cpu_of "$LOGS/throughput-restation.txt" "$B/restation" irecv send /tmp/throughput.bin --ecid "$ecid")"
    ms_r=$(($(ms) - t0))
    wait_until 30 up_event "$mark" || bad="$bad restation: rc=$rc_r no upload event with the file's sha256 ($(tail -n 1 "$LOGS/throughput-restation.txt" | oneline));"
    mark=$(event_lines)
    t0=$(ms)
    read -r rc_i cpu_i <<<"$(cpu_of "$LOGS/throughput-irecovery.txt" irecovery -i "$ecid" -f /tmp/throughput.bin)"
    ms_i=$(($(ms) - t0))
    wait_until 30 up_event "$mark" || bad="$bad irecovery: rc=$rc_i no upload event with the file's sha256;"
    rm -f /tmp/throughput.bin
    figures="bytes=$size restation($BENCH_RESTATION_PROFILE build)=$(mbps "$size" "$ms_r") MB/s (cpu ${cpu_r}s, $(secs "$ms_r")s) irecovery=$(mbps "$size" "$ms_i") MB/s (cpu ${cpu_i}s, $(secs "$ms_i")s) ratio=$(ratio "$ms_i" "$ms_r") (restation/irecovery speed; whole process: start, libusb, upload)"
    if [ -z "$bad" ]; then
        pass throughput-upload "$figures"
    else
        fail throughput-upload "$bad $figures"
    fi
fi

# proc_cpu PID: user+sys CPU ticks of a running process (/proc/PID/stat fields 14 and 15)
proc_cpu() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_s() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }
# stream VIA_NAME SOCKET UDID DAEMON_PID: BENCH_STREAM_MIB through the phone's echo port;
# sets STREAM_<VIA_NAME> to "MB/s cpu-of-daemon" and STREAM_ERR on failure
stream_through() {
    local name=$1 socket=$2 udid=$3 pid=$4 c0 c1 t0 took out rc
    c0=$(proc_cpu "$pid")
    t0=$(ms)
    out=$(timeout 300 "$T" mux-echo --socket "$socket" --udid "$udid" --port 7 --bytes $((BENCH_STREAM_MIB * 1048576)) 2>&1)
    rc=$?
    took=$(($(ms) - t0))
    c1=$(proc_cpu "$pid")
    echo "$out" >"$LOGS/stream-$name.txt"
    if [ "$rc" -eq 0 ]; then
        printf '%s %s %s %s\n' "$(mbps $((BENCH_STREAM_MIB * 1048576)) "$took")" "$(ticks_s $((c1 - c0)))" "$(secs "$took")" "$(sed -n 's/.*stream_cpu=\([0-9.]*\).*/\1/p' <<<"$out")"
    else
        echo "error rc=$rc $(oneline <<<"$out")"
        return 1
    fi
}
STREAM_USBMUXD=""
STREAM_RESTATION=""

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
if [ -n "$MUX_PID" ] && [ -x "$T" ]; then
    # the lockdown GetValue on the wire, and a stream through the phone's echo port
    if dev=$(usb_dev "$UDID1"); then
        read -r bus addr <<<"$dev"
        capture wire-lockdown-usbmuxd "$bus" "$addr" timeout 60 ideviceinfo -u "$UDID1" -s -k UniqueChipID
    else
        echo "rc=1 error=no device with serial $UDID1 on the bus" >"$WIRE/wire-lockdown-usbmuxd.meta"
    fi
    STREAM_USBMUXD=$(stream_through usbmuxd /var/run/usbmuxd "$UDID1" "$MUX_PID")
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
# the mode as a technician reads it: `recovery`, not the JSON form `{"recovery":"0x1281"}`
present() { devices_json | jq -r '.[] | select(.present) | "\(.id) \(.mode | if type == "object" then (keys | first) else tostring end) \(.port | tostring)"' 2>/dev/null; }
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
        --pair-records /run/pairs --store "$B/store" --tss-url "$BENCH_TSS_URL" \
        >"$LOGS/restation-serve.log" 2>&1 &
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
    if [ -x "$T" ]; then
        if dev=$(usb_dev "$UDID2"); then
            read -r bus addr <<<"$dev"
            capture wire-lockdown-restation "$bus" "$addr" via_restation timeout 60 ideviceinfo -u "$UDID2" -s -k UniqueChipID
        else
            echo "rc=1 error=no device with serial $UDID2 on the bus" >"$WIRE/wire-lockdown-restation.meta"
        fi
        STREAM_RESTATION=$(stream_through restation /run/mux.sock "$UDID2" "$SERVE_PID")
        read -r r_mbps r_cpu r_s r_ccpu <<<"$STREAM_RESTATION"
        read -r u_mbps u_cpu u_s u_ccpu <<<"$STREAM_USBMUXD"
        figures="bytes=$((BENCH_STREAM_MIB * 1048576)) each way through the phone's echo port: restation($BENCH_RESTATION_PROFILE build)=$r_mbps MB/s (daemon cpu ${r_cpu}s, client cpu ${r_ccpu}s, ${r_s}s) usbmuxd=$u_mbps MB/s (daemon cpu ${u_cpu}s, client cpu ${u_ccpu}s, ${u_s}s) ratio=$(ratio "$r_mbps" "$u_mbps") (restation/usbmuxd speed)"
        if [ "$r_mbps" != error ] && [ "$u_mbps" != error ] && [ -n "$r_mbps" ] && [ -n "$u_mbps" ]; then
            pass throughput-mux "$figures"
        else
            fail throughput-mux "restation: [${STREAM_RESTATION:-not run}] usbmuxd: [${STREAM_USBMUXD:-not run}]"
        fi
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

    # A whole restore on the kernel's USB stack: the RESTORE phone from DFU to a restored phone
    # (iBSS, iBEC, the ramdisk and the rest in recovery, restored, ASR, the reboot), personalized
    # by the host's TSS stand-in, the IPSW read from the store the host staged.
    RP=$BENCH_RESTORE
    recid=$(phone "$RP" ECID)
    if [ -n "$BENCH_RESTORE_ERROR" ] || [ -z "$BENCH_RESTORE_IPSW" ]; then
        fail restation-restore "no staged IPSW: ${BENCH_RESTORE_ERROR:-none}"
    else
        t0=$(ms)
        mark=$(event_lines)
        timeout 900 "$R" restore --socket /run/restation.sock --ecid "$recid" \
            --ipsw "$BENCH_RESTORE_IPSW" --erase --json \
            >"$LOGS/restation-restore.jsonl" 2>"$LOGS/restation-restore.err"
        rc=$?
        took=$(since "$t0")
        last=$(tail -n 1 "$LOGS/restation-restore.jsonl")
        phases=$(jq -r .phase "$LOGS/restation-restore.jsonl" 2>/dev/null | uniq | paste -sd'>' -)
        job_s=$(jq -r 'if .ended_ms then ((.ended_ms - .started_ms) / 1000 | tostring) else "?" end' <<<"$last" 2>/dev/null)
        modes=$(events_after "$mark" ".event == \"mode\" and .busid == \"$RP\"" | jq -r .mode 2>/dev/null | paste -sd'>' -)
        build_ok() { [ "$(via_restation ideviceinfo -u "$(phone "$RP" UDID)" -s -k BuildVersion 2>/dev/null)" = "$BENCH_RESTORE_BUILD" ]; }
        if [ "$rc" -eq 0 ] && [ "$(jq -r .state <<<"$last" 2>/dev/null)" = succeeded ] && wait_until 60 build_ok; then
            pass restation-restore "ECID $recid $(phone "$RP" PRODUCT) dfu -> normal running $BENCH_RESTORE_BUILD (lockdown BuildVersion through restation's socket) job=${job_s}s wall=$took phases=[$phases] host saw modes=[$modes] attempts=$(jq -r .attempts <<<"$last" 2>/dev/null)"
        else
            fail restation-restore "rc=$rc state=$(jq -r .state <<<"$last" 2>/dev/null) phase=$(jq -r .phase <<<"$last" 2>/dev/null) error=[$(jq -r '.error // ""' <<<"$last" 2>/dev/null | oneline)] number=$(jq -r '.number // ""' <<<"$last" 2>/dev/null) BuildVersion=[$(via_restation ideviceinfo -u "$(phone "$RP" UDID)" -s -k BuildVersion 2>&1 | oneline)] phases=[$phases] modes=[$modes] after $took; stderr: $(tail -n 2 "$LOGS/restation-restore.err" | oneline)"
        fi
    fi
    stop "$SERVE_PID"
else
    needs_restation restation-usbmuxd-ideviceinfo && fail restation-usbmuxd-ideviceinfo "restation serve did not start"
    needs_restation restation-mode-change && fail restation-mode-change "restation serve did not start"
    needs_restation restation-restore && fail restation-restore "restation serve did not start"
fi

# --- done --------------------------------------------------------------------------------------
[ -n "$ATTACH_PID" ] && kill "$ATTACH_PID" 2>/dev/null
dmesg >"$LOGS/dmesg.txt" 2>&1
echo "@@ DONE uptime=$(since 0)"
sync
echo o >/proc/sysrq-trigger
sleep 30
