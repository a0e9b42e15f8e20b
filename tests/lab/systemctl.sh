#!/bin/sh
# The lab's stand-in for systemctl in the workstation (systemd cannot run in a namespace).
# It knows the units the lab runs itself, each once the lab set it up:
#   dnsmasq.service                 Lab.serve_dhcp (the command in $LAB/dnsmasq.cmd)
#   castwall-follow.timer/.service  Lab.follow_systemd (state in $LAB/follow/, passes in $LAB/follow.log)
# Every call is logged, its arguments on one line, to $LAB/systemctl.log.
LAB=@LAB@
echo "$*" >> "$LAB/systemctl.log"

verb="" unit="" quiet="" now="" noblock="" value="" prop="" extra=""
while [ $# -gt 0 ]; do
    case "$1" in
    -q|--quiet) quiet=1;;
    --now) now=1;;
    --no-block) noblock=1;;
    --value) value=1;;
    -p|--property) shift; prop="$1";;
    --property=*) prop="${1#--property=}";;
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$1"; elif [ -z "$unit" ]; then unit="$1"; else extra="$1"; fi;;
    esac
    shift
done
say() { [ -n "$quiet" ] || echo "$1"; }
unsupported() { echo "lab systemctl: '$verb' is not supported for ${unit:-no unit}" >&2; exit 1; }
[ -z "$extra" ] || { echo "lab systemctl: one unit at a time" >&2; exit 1; }
show_loaded() {
    case "$prop" in
    LoadState) if [ -n "$value" ]; then echo "$1"; else echo "LoadState=$1"; fi;;
    *) unsupported;;
    esac
    exit 0
}
case "$verb" in daemon-reload) exit 0;; esac

# --- dnsmasq.service ---------------------------------------------------------------------
dnsmasq_pid() { cat /run/lab-dnsmasq.pid 2>/dev/null; }
dnsmasq_running() { p=$(dnsmasq_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
unit_dnsmasq() {
    case "$verb" in
    show) show_loaded loaded;;
    is-active)
        if dnsmasq_running; then say active; exit 0; fi
        say inactive; exit 3;;
    restart)
        if dnsmasq_running; then
            p=$(dnsmasq_pid); kill "$p"
            for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f /run/lab-dnsmasq.pid
        sh "$LAB/dnsmasq.cmd" || { echo "Job for dnsmasq.service failed." >&2; exit 1; }
        for i in $(seq 50); do dnsmasq_running && exit 0; sleep 0.1; done
        exit 1;;
    esac
    unsupported
}

# --- castwall-follow.timer and castwall-follow.service -------------------------------------
F="$LAB/follow"
pass_running() { p=$(cat "$F/running" 2>/dev/null); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
no_install() {
    echo "The unit files have no installation config (WantedBy=, RequiredBy=, Also=, Alias= settings in the [Install] section, and DefaultInstance= for template units). This means they are not meant to be enabled or disabled using systemctl." >&2
    exit 0
}
unit_timer() {
    case "$verb" in
    show) show_loaded loaded;;
    is-enabled)
        if [ -e "$F/enabled" ]; then say enabled; exit 0; fi
        say disabled; exit 1;;
    is-active)
        if [ -e "$F/active" ]; then say active; exit 0; fi
        say inactive; exit 3;;
    enable)
        if [ ! -e "$F/enabled" ]; then
            touch "$F/enabled"
            echo "Created symlink /etc/systemd/system/timers.target.wants/castwall-follow.timer → /lib/systemd/system/castwall-follow.timer." >&2
        fi
        [ -z "$now" ] || touch "$F/active"
        exit 0;;
    disable)
        if [ -e "$F/enabled" ]; then
            rm -f "$F/enabled"
            echo "Removed \"/etc/systemd/system/timers.target.wants/castwall-follow.timer\"." >&2
        fi
        [ -z "$now" ] || rm -f "$F/active"
        exit 0;;
    start|restart) touch "$F/active"; exit 0;;
    stop) rm -f "$F/active"; exit 0;;
    esac
    unsupported
}
unit_service() {
    case "$verb" in
    show) show_loaded loaded;;
    is-enabled) say static; exit 0;;
    is-active)
        # A oneshot unit is "activating" while it runs, "failed" after a failed run, else "inactive".
        if pass_running; then say activating
        elif [ -n "$(cat "$F/last" 2>/dev/null | grep -vx 0)" ]; then say failed
        else say inactive; fi
        exit 3;;
    enable|disable) no_install;;
    start|restart)
        # Each start runs one pass, passes one at a time (the runner takes a lock): unlike systemd,
        # a start while a pass runs is not merged into it, it queues another pass.
        if [ -n "$noblock" ]; then
            setsid "$F/run" </dev/null >/dev/null 2>&1 &
            exit 0
        fi
        setsid -w "$F/run" </dev/null >/dev/null 2>&1 && exit 0
        echo "Job for castwall-follow.service failed because the control process exited with error code." >&2
        echo "See \"systemctl status castwall-follow.service\" and \"journalctl -xeu castwall-follow.service\" for details." >&2
        exit 1;;
    stop)
        if pass_running; then kill -TERM -- "-$(cat "$F/running")" 2>/dev/null; fi
        exit 0;;
    esac
    unsupported
}

case "$unit" in
dnsmasq.service) [ -f "$LAB/dnsmasq.cmd" ] && unit_dnsmasq;;
castwall-follow.timer) [ -f "$F/pass" ] && unit_timer;;
castwall-follow.service) [ -f "$F/pass" ] && unit_service;;
"") unsupported;;
esac
# Not a unit the lab runs (or not set up yet): what systemctl says of a unit it cannot find.
case "$verb" in
show) show_loaded not-found;;
is-active) say inactive; exit 3;;
is-enabled) echo "Failed to get unit file state for $unit: No such file or directory" >&2; exit 1;;
esac
echo "Failed to $verb $unit: Unit $unit not found." >&2
exit 5
