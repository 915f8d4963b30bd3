#!/bin/sh
# lab STAND-IN for Istio's istio-start.sh (not Istio). Run by istio.service as root; it models:
#
# - traffic capture with iptables nat rules, read from /var/lib/istio/envoy/cluster.env:
#     outbound (OUTPUT): TCP not from uid/gid istio-proxy and not to 127.0.0.0/8 -> REDIRECT 15001,
#       all destinations when ISTIO_SERVICE_CIDR is '*', else only those CIDRs (comma-separated);
#     inbound (PREROUTING): TCP to ISTIO_INBOUND_PORTS ('*' = all, else comma-separated ports),
#       except ISTIO_LOCAL_EXCLUDE_PORTS and the agent's own 15000-15099 -> REDIRECT 15006;
#     DNS, only when ISTIO_META_DNS_CAPTURE is 'true': UDP and TCP to port 53 not from istio-proxy
#       -> REDIRECT 15053 (the agent's DNS proxy on 127.0.0.1).
#   An unset ISTIO_SERVICE_CIDR or ISTIO_INBOUND_PORTS captures nothing in that direction. Only
#   opening SYNs are redirected (--syn, the stand-in's own choice): connections older than the rules,
#   such as the SSH session that starts the agent, keep flowing.
#   The chains carry Istio's names (ISTIO_OUTPUT, ISTIO_REDIRECT, ISTIO_INBOUND, ISTIO_IN_REDIRECT,
#   ISTIO_DNS); each start flushes and refills them and hooks them once, so restarts (Restart=always)
#   never stack rules. `istio-start.sh clean` (the unit's ExecStopPost, as the real one's) and
#   `--cleanup` (the package's prerm) remove them: a stopped agent leaves no capture.
# - then the agent stand-in, as user istio-proxy (setpriv), so its own connections bypass capture.
#
# Not modelled: TPROXY mode, IPv6 (ip6tables), ISTIO_SERVICE_EXCLUDE_CIDR, outbound port exclusions,
# the real script's envoy bootstrap and cert handling.
set -eu

CLUSTER_ENV=/var/lib/istio/envoy/cluster.env
PROXY_USER=istio-proxy
CHAINS="ISTIO_OUTPUT ISTIO_REDIRECT ISTIO_INBOUND ISTIO_IN_REDIRECT ISTIO_DNS"
IPT="iptables -w 5"

say() { echo "istio-start.sh stand-in: $*" >&2; }

# The value of KEY in cluster.env (KEY='value' lines, as istioctl writes them), without quotes.
env_value() {
    sed -n "s/^$1=//p" "$CLUSTER_ENV" | tail -n 1 | sed -e "s/^'\(.*\)'\$/\1/" -e 's/^"\(.*\)"$/\1/'
}

unhook() {
    while $IPT -t nat -D OUTPUT -j ISTIO_OUTPUT 2>/dev/null; do :; done
    while $IPT -t nat -D PREROUTING -p tcp -j ISTIO_INBOUND 2>/dev/null; do :; done
}

cleanup() {
    unhook
    for c in $CHAINS; do
        $IPT -t nat -F "$c" 2>/dev/null || true
    done
    for c in $CHAINS; do
        $IPT -t nat -X "$c" 2>/dev/null || true
    done
}

capture() {
    cidrs=$(env_value ISTIO_SERVICE_CIDR)
    inbound=$(env_value ISTIO_INBOUND_PORTS)
    exclude=$(env_value ISTIO_LOCAL_EXCLUDE_PORTS)
    dns=$(env_value ISTIO_META_DNS_CAPTURE)
    for c in $CHAINS; do
        $IPT -t nat -N "$c" 2>/dev/null || $IPT -t nat -F "$c"
    done
    # TCP: only a connection's opening SYN is redirected. A connection older than the rules (the SSH
    # session that ran `systemctl start istio`) is first seen by conntrack mid-stream, possibly by a
    # reply packet going out: that one must not be taken for a new outbound connection.
    $IPT -t nat -A ISTIO_REDIRECT -p tcp --syn -j REDIRECT --to-ports 15001
    $IPT -t nat -A ISTIO_IN_REDIRECT -p tcp --syn -j REDIRECT --to-ports 15006
    $IPT -t nat -A ISTIO_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053
    $IPT -t nat -A ISTIO_DNS -p tcp --dport 53 --syn -j REDIRECT --to-ports 15053

    # Outbound: the agent's own traffic (uid or gid istio-proxy) is never captured.
    $IPT -t nat -A ISTIO_OUTPUT -m owner --uid-owner "$PROXY_USER" -j RETURN
    $IPT -t nat -A ISTIO_OUTPUT -m owner --gid-owner "$PROXY_USER" -j RETURN
    if [ "$dns" = "true" ]; then
        $IPT -t nat -A ISTIO_OUTPUT -j ISTIO_DNS
    fi
    $IPT -t nat -A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN
    if [ "$cidrs" = "*" ]; then
        $IPT -t nat -A ISTIO_OUTPUT -p tcp -j ISTIO_REDIRECT
    elif [ -n "$cidrs" ]; then
        for cidr in $(echo "$cidrs" | tr ',' ' '); do
            $IPT -t nat -A ISTIO_OUTPUT -p tcp -d "$cidr" -j ISTIO_REDIRECT
        done
    fi

    # Inbound: never the agent's own ports, nor the excluded ones (SSH among them).
    $IPT -t nat -A ISTIO_INBOUND -p tcp --dport 15000:15099 -j RETURN
    for port in $(echo "$exclude" | tr ',' ' '); do
        $IPT -t nat -A ISTIO_INBOUND -p tcp --dport "$port" -j RETURN
    done
    if [ "$inbound" = "*" ]; then
        $IPT -t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
    elif [ -n "$inbound" ]; then
        for port in $(echo "$inbound" | tr ',' ' '); do
            $IPT -t nat -A ISTIO_INBOUND -p tcp --dport "$port" -j ISTIO_IN_REDIRECT
        done
    fi

    # Hook the chains in exactly once.
    $IPT -t nat -C OUTPUT -j ISTIO_OUTPUT 2>/dev/null || $IPT -t nat -A OUTPUT -j ISTIO_OUTPUT
    $IPT -t nat -C PREROUTING -p tcp -j ISTIO_INBOUND 2>/dev/null || $IPT -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND
    say "capture: outbound '${cidrs}' -> 15001, inbound '${inbound}' (except '${exclude}') -> 15006, dns '${dns:-false}'"
}

if [ "${1:-}" = "--cleanup" ] || [ "${1:-}" = "clean" ]; then
    cleanup
    exit 0
fi

if [ -r "$CLUSTER_ENV" ]; then
    capture
else
    say "no $CLUSTER_ENV: no traffic capture"  # the agent says what is missing and exits
fi
exec setpriv --reuid "$PROXY_USER" --regid "$PROXY_USER" --init-groups /usr/bin/python3 /usr/local/bin/pilot-agent
