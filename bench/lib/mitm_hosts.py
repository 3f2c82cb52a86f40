"""mitmproxy addon for the sandbox-egress bench: the equivalent of sandbox-egress --hosts.

The bench's made-up names (*.brokered.test, *.tunnel.test) are not in DNS; sandbox-egress reads them from a
hosts file, mitmproxy has no such option, so this dials 127.0.0.1 instead while keeping the name as the upstream
TLS SNI (and therefore as the name the upstream certificate is verified against). One hook call per upstream
connection, not per request. Used by bench/lib/peers.mjs as `mitmdump -s mitm_hosts.py`.
"""
from mitmproxy import ctx  # noqa: F401  (keeps mitmdump's addon loader happy on old versions)

SUFFIXES = (".brokered.test", ".tunnel.test")


class LoopbackHosts:
    def server_connect(self, data):
        server = data.server
        if not server.address:
            return
        host, port = server.address[0], server.address[1]
        if isinstance(host, str) and host.endswith(SUFFIXES):
            if server.sni is None:
                server.sni = host
            server.address = ("127.0.0.1", port)


addons = [LoopbackHosts()]
