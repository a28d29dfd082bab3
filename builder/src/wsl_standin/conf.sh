#!/bin/busybox sh
# `conf SECTION KEY`: the value of KEY in SECTION of /etc/wsl.conf, nothing when absent (WSL's
# INI rules: `#` comments, `key = value`, sections in brackets).
exec /bin/busybox awk -v want_section="$1" -v want_key="$2" '
    /^[ \t]*[#;]/ { next }
    /^[ \t]*\[/ { section = $0; gsub(/[][ \t\r]/, "", section); next }
    section == want_section {
        eq = index($0, "=")
        if (eq == 0) next
        key = substr($0, 1, eq - 1); value = substr($0, eq + 1)
        gsub(/^[ \t]+|[ \t\r]+$/, "", key); gsub(/^[ \t]+|[ \t\r]+$/, "", value)
        if (key == want_key) { print value; exit }
    }' /etc/wsl.conf 2>/dev/null
