#!/bin/sh
# Installs what `bench/swarm.py --baseline nginx` needs: Debian's nginx and its RTMP module (RTMP in, HLS out).
# Run as root (or with sudo). The swarm benchmark itself needs nothing beyond `pip install -e '.[test]'`
# plus `ss` from iproute2 (per-socket byte counters), which Debian images normally have.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends nginx libnginx-mod-rtmp iproute2
# Debian starts the packaged nginx service where there is an init system; the benchmark runs its own instance
# with its own prefix on loopback, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
fi
ls /usr/lib/nginx/modules/ngx_rtmp_module.so
nginx -v
