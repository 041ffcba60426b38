# The fields of /proc/PID/stat after "PID (comm) ": comm may hold spaces and ")".
stat_fields() {
    local line
    line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    printf '%s\n' "${line##*) }"
}

ppid_of() {
    local f
    read -r -a f <<<"$(stat_fields "$1")" || return 1
    [ -n "${f[19]:-}" ] || return 1
    printf '%s\n' "${f[1]}"
}

# Start time in clock ticks since boot (field 22 of /proc/PID/stat).
started() {
    local f
    read -r -a f <<<"$(stat_fields "$1")" || return 1
    [ -n "${f[19]:-}" ] || return 1
    printf '%s\n' "${f[19]}"
}
