#!/usr/bin/env python3
"""A Whispr v1 client session, written from the Whispr v1 API document (proto/WHISPR-V1.md) the way the
Python desktop client talks: PyNaCl keys (X25519 SealedBox + Ed25519 signing, hex),
`requests` for HTTP and `websockets` for the sockets. It runs one whole session against
a relay and exits 0, or fails with an AssertionError naming the step.

    python3 tests/clients/whispr_v1_client.py http://127.0.0.1:8000

Run by tests/it/v1_script.rs (Debian: python3-nacl python3-requests python3-websockets).
"""

import asyncio
import base64
import hashlib
import json
import sys
import time

import requests
import websockets
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

TIMEOUT = 5


class User:
    """The desktop client's two keypairs."""

    def __init__(self):
        self.enc = PrivateKey.generate()
        self.sign = SigningKey.generate()

    @property
    def enc_pub(self):
        return self.enc.public_key.encode().hex()

    @property
    def sign_pub(self):
        return self.sign.verify_key.encode().hex()

    def message(self, to, text):
        ciphertext = SealedBox(PublicKey(bytes.fromhex(to.enc_pub))).encrypt(text.encode())
        return {
            "to": to.enc_pub,
            "from_": self.sign_pub,
            "enc_pub": self.enc_pub,
            "message": base64.b64encode(ciphertext).decode(),
            "signature": base64.b64encode(self.sign.sign(ciphertext).signature).decode(),
            "timestamp": time.time(),
        }

    def open(self, m):
        """What the client does with a polled or pushed message: verify, then decrypt."""
        for field in ("from", "enc_pub", "message", "signature"):
            assert field in m, f"message lacks {field}: {m}"
        ciphertext = base64.b64decode(m["message"])
        VerifyKey(bytes.fromhex(m["from"])).verify(ciphertext, base64.b64decode(m["signature"]))
        return SealedBox(self.enc).decrypt(ciphertext).decode()


class Relay:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.ws_base = "ws" + self.base[len("http"):]

    def post(self, path, body):
        return requests.post(self.base + path, json=body, timeout=TIMEOUT)

    def get(self, path, **params):
        return requests.get(self.base + path, params=params, timeout=TIMEOUT)

    def send(self, sender, to, text):
        r = self.post("/send", sender.message(to, text))
        assert r.status_code == 200 and r.json()["status"] == "ok", f"send: {r.status_code} {r.text}"

    def poll(self, user, since=None):
        params = {} if since is None else {"since": since}
        r = self.get(f"/inbox/{user.enc_pub}", **params)
        assert r.status_code == 200, f"poll: {r.status_code} {r.text}"
        return r.json()["messages"]


async def next_json(ws):
    """The next JSON text frame (the relay ignores our 'ping'; pings are control frames)."""
    while True:
        text = await asyncio.wait_for(ws.recv(), TIMEOUT)
        return json.loads(text)


async def quiet(ws, seconds=0.5):
    try:
        frame = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {frame}")


def step(name):
    print(f"  v1 client: {name}", flush=True)


async def session(relay):
    step("GET /public-key (liveness probe)")
    r = relay.get("/public-key")
    assert r.status_code == 200, r.text
    key = r.json()["public_key"]
    assert len(key) == 64 and int(key, 16) >= 0, key

    alice, bob = User(), User()

    step("start-up poll with no since: empty")
    assert relay.poll(bob) == []

    step("send three, poll them once (fetch-and-delete), sorted by timestamp")
    for n in range(3):
        relay.send(alice, bob, f"poll {n}")
    got = relay.poll(bob)
    assert [bob.open(m) for m in got] == ["poll 0", "poll 1", "poll 2"], got
    stamps = [m["timestamp"] for m in got]
    assert stamps == sorted(stamps), stamps
    assert relay.poll(bob, since=max(stamps)) == []
    assert relay.poll(bob) == [], "a polled message must not come back"

    step("WS /ws/{key}: live push with `to`")
    async with websockets.connect(f"{relay.ws_base}/ws/{bob.enc_pub}") as ws:
        await ws.send("ping")
        relay.send(alice, bob, "live")
        m = await next_json(ws)
        assert bob.open(m) == "live" and m["to"] == bob.enc_pub, m
        await quiet(ws)

    step("WS /ws?recipient=: the query form")
    async with websockets.connect(f"{relay.ws_base}/ws?recipient={bob.enc_pub}") as ws:
        await ws.send("ping")
        relay.send(alice, bob, "query form")
        assert bob.open(await next_json(ws)) == "query form"

    step("offline, then reconnect: ten messages, each once, in order")
    for n in range(10):
        relay.send(alice, bob, f"queued {n}")
    async with websockets.connect(f"{relay.ws_base}/ws/{bob.enc_pub}") as ws:
        got = [bob.open(await next_json(ws)) for _ in range(10)]
        assert got == [f"queued {n}" for n in range(10)], got
        await quiet(ws)
    async with websockets.connect(f"{relay.ws_base}/ws/{bob.enc_pub}") as ws:
        await quiet(ws)
    assert relay.poll(bob) == [], "nothing is handed out twice"

    step("the sender's own socket gets a copy with `to`")
    async with websockets.connect(f"{relay.ws_base}/ws/{alice.sign_pub}") as mine:
        relay.send(alice, bob, "copy")
        m = await next_json(mine)
        assert m["to"] == bob.enc_pub and m["from"] == alice.sign_pub, m
    assert [bob.open(m) for m in relay.poll(bob)] == ["copy"]

    step("errors: bad signature 400, malformed body 422")
    bad = alice.message(bob, "forged")
    bad["message"] = base64.b64encode(b"something else").decode()
    r = relay.post("/send", bad)
    assert r.status_code == 400 and r.json() == {"detail": "Invalid signature"}, r.text
    r = relay.post("/send", {"to": bob.enc_pub})
    assert r.status_code == 422, r.text

    step("attachments: upload, download as JSON and raw, refusals")
    plain = b"\x89PNG fake picture " * 500
    blob = SealedBox(PublicKey(bytes.fromhex(bob.enc_pub))).encrypt(plain)
    digest = hashlib.sha256(blob).hexdigest()
    upload = {
        "to": bob.enc_pub,
        "from_": alice.sign_pub,
        "enc_pub": alice.enc_pub,
        "blob": base64.b64encode(blob).decode(),
        "signature": base64.b64encode(alice.sign.sign(blob).signature).decode(),
        "name": "picture.png",
        "size": len(plain),
        "sha256": digest,
    }
    r = relay.post("/upload", upload)
    assert r.status_code == 200 and r.json() == {"att_id": digest, "status": "ok"}, r.text
    r = relay.get(f"/download/{digest}", recipient=bob.enc_pub)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["att_id"] == digest and body["name"] == "picture.png", body
    assert body["size"] == len(plain) and body["from"] == alice.sign_pub and body["to"] == bob.enc_pub
    assert SealedBox(bob.enc).decrypt(base64.b64decode(body["blob"])) == plain
    r = relay.get(f"/download/raw/{digest}", recipient=bob.enc_pub)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content == blob
    assert relay.get(f"/download/{digest}", recipient=alice.enc_pub).status_code == 403
    assert relay.get(f"/download/{'0' * 64}", recipient=bob.enc_pub).status_code == 404
    mismatch = dict(upload, sha256="1" * 64)
    assert relay.post("/upload", mismatch).status_code == 400
    forged = dict(upload, signature=base64.b64encode(bob.sign.sign(blob).signature).decode())
    assert relay.post("/upload", forged).status_code == 400
    assert relay.post("/upload", dict(upload, blob="%%%")).status_code == 400
    assert relay.post("/upload", dict(upload, sha256="xyz")).status_code == 400

    step("/signal: two peers exchange offer, answer and candidates")
    call = f"call-{time.time_ns()}"
    async with websockets.connect(f"{relay.ws_base}/signal") as caller, websockets.connect(
        f"{relay.ws_base}/signal"
    ) as callee:
        await caller.send(json.dumps({"type": "join", "call_id": call}))
        await caller.send("this is not json")  # ignored, the socket stays up
        await callee.send(json.dumps({"type": "join", "call_id": call}))
        joined = await next_json(caller)
        assert joined["type"] == "peer-join", joined
        offer = {"type": "offer", "sdp": "v=0 o=- 1 2 IN IP4 127.0.0.1"}
        await caller.send(json.dumps({"type": "signal", "call_id": call, "payload": offer}))
        got = await next_json(callee)
        assert got["type"] == "signal" and got["payload"] == offer, got
        answer = {"type": "answer", "sdp": "v=0 o=- 3 4 IN IP4 127.0.0.1"}
        await callee.send(json.dumps({"type": "signal", "call_id": call, "payload": answer}))
        got = await next_json(caller)
        assert got["type"] == "signal" and got["payload"] == answer, got
        for n in range(3):
            candidate = {"candidate": f"candidate:{n} 1 udp 2122260223 127.0.0.1 5{n}000 typ host"}
            await caller.send(json.dumps({"type": "signal", "call_id": call, "payload": candidate}))
            assert (await next_json(callee))["payload"] == candidate
        await callee.send(json.dumps({"type": "leave", "call_id": call}))
        left = await next_json(caller)
        assert left["type"] == "peer-leave", left

    print("v1 client session OK", flush=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: whispr_v1_client.py http://HOST:PORT")
    asyncio.run(session(Relay(sys.argv[1])))


if __name__ == "__main__":
    main()
