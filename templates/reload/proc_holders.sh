# strangers and own_holders read $HOLDERS, which snapshot() fills: one /proc scan a check.
snapshot() {
    HOLDERS=" $(holders | tr '\n' ' ') "
}

# Holders outside server $1's own processes (itself and its children): another server
# on the same port. A worker whose master also holds the socket is named by its master.
# (With SO_REUSEPORT, gunicorn's master holds no socket at all, only its workers.)
strangers() {
    local pid parent
    for pid in $HOLDERS; do
        [ "$pid" = "$1" ] && continue
        parent=$(ppid_of "$pid") || continue
        [ "$parent" = "$1" ] && continue
        case $HOLDERS in *" $parent "*) continue ;; esac
        printf '%s\n' "$pid"
    done
}

# Server $1's processes that hold the socket.
own_holders() {
    local pid
    for pid in $HOLDERS; do
        if [ "$pid" = "$1" ] || [ "$(ppid_of "$pid")" = "$1" ]; then
            printf '%s\n' "$pid"
        fi
    done
}

# "ps"-like description of PIDs for messages: PID(command).
describe() {
    local pid out="" comm
    for pid in "$@"; do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || comm=gone
        out="$out $pid($comm)"
    done
    printf '%s\n' "${out# }"
}
