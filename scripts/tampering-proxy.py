#!/usr/bin/env python3
"""A compromised custody server, for tests and the demo: an HTTP proxy in front of a real
custos-server that forwards every call unchanged except the approvers' GET /v1/approvals/{id},
whose answer it alters as a server that lies to approvers would.

  tampering-proxy.py UPSTREAM-URL MODE

MODE:
  noncanonical  the envelope's version (1) re-encoded as a two-byte integer: the same request,
                not in deterministic form; the challenge recomputed so that only decoding
                canonically can tell
  wallet        the walletId the server names is 98 more than the envelope's
  destination   the transaction's `to` replaced by 0x2222...2222 (canonical, challenge recomputed):
                a different request than the stored one

Prints "listening on http://127.0.0.1:PORT" once it listens; stops on SIGTERM.
"""
import base64
import hashlib
import http.server
import json
import os
import signal
import sys
import urllib.error
import urllib.request

UPSTREAM, MODE = sys.argv[1].rstrip("/"), sys.argv[2]
DOMAIN = b"custos/request"


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tamper(answer):
    envelope = b64decode(answer["envelope"])
    if MODE == "noncanonical":
        at = 2 + len(DOMAIN)
        assert envelope[at] == 0x01
        envelope = envelope[:at] + b"\x18\x01" + envelope[at + 1:]
    elif MODE == "wallet":
        answer["walletId"] = answer.get("walletId", 0) + 98
        return answer
    elif MODE == "destination":
        original = bytes.fromhex("11" * 20)
        assert original in envelope
        envelope = envelope.replace(b"\x54" + original, b"\x54" + bytes.fromhex("22" * 20), 1)
    answer["envelope"] = b64encode(envelope)
    answer["challenge"] = b64encode(hashlib.sha256(envelope).digest())
    return answer


class Proxy(http.server.BaseHTTPRequestHandler):
    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, data = error.code, error.read()
        if self.command == "GET" and self.path.startswith("/v1/approvals/") and status == 200:
            data = json.dumps(tamper(json.loads(data))).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = forward

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
# Exit at once (serve_forever and its threads would outlive a SystemExit), and take SIGTERM even
# when the parent spawned us with it blocked (a Foundation Process from a test's thread does).
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
print(f"tampering proxy ({MODE}) listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
