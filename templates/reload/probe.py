import http.client, signal, socket, sys

# Ctrl-C reaches the whole process group: stop quietly, the script reports it.
signal.signal(signal.SIGINT, signal.SIG_DFL)

host, port, uds, health, version, probes = sys.argv[1:7]
if host in ("0.0.0.0", ""):
    host = "127.0.0.1"
elif host == "::":
    host = "::1"


class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(uds)


def get(path):
    if uds:
        conn = UnixConnection("localhost", timeout=5)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace").strip().splitlines()
        return f"{response.status} {body[0] if body else ''}".strip()
    except Exception as exc:
        return f"000 {type(exc).__name__}"
    finally:
        conn.close()


print("health", get(health))
for _ in range(int(probes)):
    print("version", get(version))
