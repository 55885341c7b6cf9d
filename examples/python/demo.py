"""raftlock demo: session, lock, fenced append, read-back, release, close; then (against a
real daemon) cancelling a queued acquire, and the daemon's push events.

    python3 demo.py --server 127.0.0.1:7400      # against a running raftlockd
    python3 demo.py --self-test                  # offline: frame bytes vs protocol.md, and the
                                                 # demo against an in-process fake two-node cluster

Exits non-zero on any mismatch.
"""

import argparse
import os
import socket
import sys
import threading

import msgpack

from raftlock_client import Client, RaftLockError, encode_frame, read_frame

TOKEN = 0x9C1D4E7A2B3F0861

# The worked example of protocol.md §14, built from the document's descriptions, with the hex
# the document shows. The Rust test suite checks the same hex against the Rust codec.
EXAMPLES = [
    ("Hello", {"type": "Hello", "version": 1, "role": "client"},
     "00 00 00 21 83 a4 74 79 70 65 a5 48 65 6c 6c 6f a7 76 65 72 73 69 6f 6e 01 a4 72 6f 6c 65"
     " a6 63 6c 69 65 6e 74"),
    ("Welcome", {"type": "Welcome", "version": 1, "node_id": 1, "leader": 1,
                 "leader_addr": "127.0.0.1:7400"}, None),
    ("OpenSession", {"type": "OpenSession", "id": 1, "nonce": 0x1F2E3D4C5B6A7988,
                     "ttl_ms": 10000}, None),
    ("SessionOpened", {"type": "SessionOpened", "id": 1, "session": 2, "token": TOKEN,
                       "ttl_ms": 10000}, None),
    ("Acquire", {"type": "Acquire", "id": 2, "session": 2, "token": TOKEN, "seq": 1,
                 "lock": "build-cache", "mode": "exclusive", "wait_ms": None, "hold_ms": None},
     None),
    ("Granted", {"type": "Granted", "id": 2, "fence": 3}, None),
    ("Append", {"type": "Append", "id": 3, "session": 2, "token": TOKEN, "seq": 2,
                "file": "build.log", "lock": "build-cache", "fence": 3, "data": b"ok\n"}, None),
    ("Error", {"type": "Error", "id": 3, "code": "NotLeader", "message": "not the leader",
               "leader": 1, "leader_addr": "127.0.0.1:7400"}, None),
]


def hex_block(frame):
    """protocol.md's hex style: lowercase pairs, 16 per line."""
    pairs = [f"{b:02x}" for b in frame]
    return "\n".join(" ".join(pairs[i:i + 16]) for i in range(0, len(pairs), 16))


def check_frames(doc_path):
    """Encodes every example; the Hello must equal the hex above, and all must be in the doc."""
    failures = 0
    name, message, hello_hex = EXAMPLES[0]
    if encode_frame(message).hex(" ") != hello_hex:
        print(f"FAIL Hello frame {encode_frame(message).hex(' ')} != {hello_hex}")
        failures += 1
    doc = None
    if doc_path and os.path.exists(doc_path):
        with open(doc_path, encoding="utf-8") as f:
            doc = f.read()
    else:
        print(f"note: {doc_path} not found; only the Hello frame was compared")
    for name, message, _ in EXAMPLES:
        frame = encode_frame(message)
        back = msgpack.unpackb(frame[4:], raw=False)
        if back != message:
            print(f"FAIL {name} does not round-trip: {back!r}")
            failures += 1
        if doc is not None and f"```text\n{hex_block(frame)}\n```" not in doc:
            print(f"FAIL {name} frame not in protocol.md:\n{hex_block(frame)}")
            failures += 1
        elif doc is not None:
            print(f"ok   {name} frame matches protocol.md ({len(frame)} bytes)")
    return failures


class FakeCluster:
    """Two fake nodes on loopback: a follower that redirects with NotLeader, and a leader that
    implements just enough of protocol.md (sessions, exclusive locks, fenced files, dedup by
    seq) to run the demo. It is a test double for the client, not a server."""

    def __init__(self):
        self.leader = socket.create_server(("127.0.0.1", 0))
        self.follower = socket.create_server(("127.0.0.1", 0))
        self.leader_addr = "%s:%d" % self.leader.getsockname()
        self.follower_addr = "%s:%d" % self.follower.getsockname()
        self.index = 10
        self.sessions = {}  # session -> token
        self.holders = {}  # lock -> (session, fence)
        self.files = {}
        self.results = {}  # (session, seq) -> response
        self.lock = threading.Lock()
        for sock, leads in ((self.leader, True), (self.follower, False)):
            threading.Thread(target=self._accept, args=(sock, leads), daemon=True).start()

    def _accept(self, server, leads):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, leads), daemon=True).start()

    def _serve(self, conn, leads):
        try:
            hello = read_frame(conn)
            if hello["type"] != "Hello":
                conn.sendall(encode_frame({"type": "Error", "id": 0, "code": "HandshakeRequired",
                                           "message": "send Hello first"}))
                return
            conn.sendall(encode_frame({"type": "Welcome", "version": 1, "node_id": 1 if leads else 2,
                                       "leader": None, "leader_addr": None}))
            while True:
                request = read_frame(conn)
                if not leads:
                    answer = {"type": "Error", "id": request["id"], "code": "NotLeader",
                              "message": "not the leader", "leader": 1,
                              "leader_addr": self.leader_addr}
                else:
                    with self.lock:
                        answer = self._apply(request)
                conn.sendall(encode_frame(answer))
        except Exception:  # the client went away
            conn.close()

    def _apply(self, r):
        rid, kind = r["id"], r["type"]
        if kind == "OpenSession":
            self.index += 1
            self.sessions[self.index] = TOKEN
            return {"type": "SessionOpened", "id": rid, "session": self.index, "token": TOKEN,
                    "ttl_ms": r["ttl_ms"]}
        if kind == "Read":
            if r["file"] not in self.files:
                return {"type": "Error", "id": rid, "code": "NotFound", "message": r["file"]}
            data = self.files[r["file"]]
            return {"type": "Data", "id": rid, "data": data[r["offset"]:r["offset"] + r["len"]],
                    "size": len(data)}
        if self.sessions.get(r["session"]) != r["token"]:
            return {"type": "Error", "id": rid, "code": "SessionExpired", "message": "no session"}
        if kind == "KeepAlive":
            return {"type": "KeptAlive", "id": rid, "ttl_ms": 10000}
        key = (r["session"], r["seq"])
        if key not in self.results:
            self.index += 1
            self.results[key] = self._mutate(r)
        answer = dict(self.results[key])
        answer["id"] = rid
        return answer

    def _mutate(self, r):
        kind, session = r["type"], r["session"]
        if kind == "CloseSession":
            del self.sessions[session]
            return {"type": "SessionClosed"}
        if kind == "Acquire":
            if r["lock"] in self.holders:
                return {"type": "Error", "code": "Busy", "message": "taken"}
            self.holders[r["lock"]] = (session, self.index)
            return {"type": "Granted", "fence": self.index}
        if kind == "Release":
            if self.holders.get(r["lock"], (None,))[0] != session:
                return {"type": "Error", "code": "NotHolder", "message": r["lock"]}
            del self.holders[r["lock"]]
            return {"type": "Released"}
        if kind == "Append":
            if self.holders.get(r["lock"]) != (session, r["fence"]):
                return {"type": "Error", "code": "StaleFence", "message": "stale"}
            data = self.files.setdefault(r["file"], b"")
            self.files[r["file"]] = data + r["data"]
            return {"type": "Appended", "offset": len(data), "size": len(data) + len(r["data"])}
        return {"type": "Error", "code": "UnknownType", "message": kind}


def demo(servers):
    """The demo proper. Returns the number of mismatches."""
    failures = 0

    def check(what, got, want):
        nonlocal failures
        if got != want:
            print(f"FAIL {what}: got {got!r}, want {want!r}")
            failures += 1
        else:
            print(f"ok   {what}")

    client = Client(servers)
    session = client.open_session(ttl_ms=10_000)
    print(f"session {session} via {client.conn.addr}")
    lock, file = "demo-lock", f"demo-{os.getpid()}-{os.urandom(4).hex()}.log"
    fence = client.acquire(lock, wait_ms=10_000, on_queued=lambda p: print(f"queued at {p}"))
    print(f"granted {lock} with fence {fence}")
    payload = b"hello from the python demo\n"
    offset, size = client.append(file, lock, fence, payload)
    check("append offset", offset, 0)
    check("file size after append", size, len(payload))
    data, size = client.read(file, 0, 1 << 20)
    check("read back", data, payload)
    check("read size", size, len(payload))
    check("keep-alive ttl", client.keep_alive(), 10_000)
    client.release(lock)
    try:
        client.append(file, lock, fence, b"late write\n")
        check("append after release", "Appended", "StaleFence")
    except Exception as e:  # noqa: BLE001 - the error code is what we check
        check("append after release is refused", getattr(e, "code", repr(e)), "StaleFence")
    client.close()
    return failures


def demo_cancel(servers):
    """Against a real daemon: a waiter, shown with its owner, cancels its queued acquire.
    Returns the number of mismatches."""
    failures = 0

    def check(what, got, want):
        nonlocal failures
        if got != want:
            print(f"FAIL {what}: got {got!r}, want {want!r}")
            failures += 1
        else:
            print(f"ok   {what}")

    holder, waiter = Client(servers), Client(servers)
    holder.open_session(ttl_ms=10_000, owner="python-demo holder")
    waiter.open_session(ttl_ms=10_000, owner="python-demo waiter")
    lock = f"demo-cancel-{os.getpid()}-{os.urandom(4).hex()}"
    holder.acquire(lock, wait_ms=0)
    queued, outcome = threading.Event(), {}

    def wait_for_lock():
        try:
            outcome["fence"] = waiter.acquire(lock, on_queued=lambda _position: queued.set())
        except RaftLockError as e:
            outcome["code"] = e.code

    thread = threading.Thread(target=wait_for_lock, daemon=True)
    thread.start()
    check("waiter queued", queued.wait(10), True)
    (state,) = holder.locks(lock)
    check("holder owner", state["holders"][0].get("owner"), "python-demo holder")
    check("waiter owner", state["waiters"][0].get("owner"), "python-demo waiter")
    owners = {s["session"]: s.get("owner") for s in holder.sessions()}
    check("sessions list the waiter", owners.get(waiter.session), "python-demo waiter")
    check("cancel", waiter.cancel(lock), True)
    thread.join(10)
    check("the cancelled wait ends", outcome.get("code"), "Cancelled")
    check("the queue is empty", holder.locks(lock)[0]["waiters"], [])
    check("cancel again", waiter.cancel(lock), False)
    holder.release(lock)
    check("the lock is free", holder.locks(lock), [])
    holder.close()
    waiter.close()
    return failures


def demo_pushes(servers):
    """Against a real daemon: push events. A holder with a 1.5 s hold limit hears HoldExpiring
    and then Revoked (reason "hold"); of two waiters, the second hears QueuePosition move it to
    the front when the first is granted. Returns the number of mismatches."""
    failures = 0

    def check(what, got, want):
        nonlocal failures
        if got != want:
            print(f"FAIL {what}: got {got!r}, want {want!r}")
            failures += 1
        else:
            print(f"ok   {what}")

    holder, first, second = Client(servers), Client(servers), Client(servers)
    for client in (holder, first, second):
        client.open_session(ttl_ms=10_000)
    lock = f"demo-push-{os.getpid()}-{os.urandom(4).hex()}"
    fence = holder.acquire(lock, wait_ms=0, hold_ms=1_500)
    outcomes = {}

    def wait_in_queue(name, client):
        queued = threading.Event()

        def run():
            try:
                outcomes[name] = client.acquire(lock, on_queued=lambda _position: queued.set())
            except RaftLockError as e:
                outcomes[name] = e.code

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        check(f"{name} waiter queued", queued.wait(10), True)
        return thread

    first_thread = wait_in_queue("first", first)
    second_thread = wait_in_queue("second", second)
    warning = holder.next_push(10, "HoldExpiring")
    check("HoldExpiring names the grant", (warning or {}).get("fence"), fence)
    check("HoldExpiring comes at most 1 s early", (warning or {}).get("left_ms", 10**9) <= 1_000,
          True)
    revoked = holder.next_push(10, "Revoked")
    check("Revoked at the hold limit", (revoked or {}).get("reason"), "hold")
    check("the client notes the revoked grant", holder.revoked.get((lock, fence)), "hold")
    moved = second.next_push(10, "QueuePosition")
    check("the second waiter moves to the front", (moved or {}).get("ahead"), 0)
    check("behind an exclusive holder", (moved or {}).get("mode"), "exclusive")
    first_thread.join(10)
    check("the first waiter is granted", isinstance(outcomes.get("first"), int), True)
    first.release(lock)
    second_thread.join(10)
    check("then the second", isinstance(outcomes.get("second"), int), True)
    second.release(lock)
    for client in (holder, first, second):
        client.close()
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", help="HOST:PORT of a member (repeatable)")
    parser.add_argument("--self-test", action="store_true",
                        help="check frames against protocol.md and run against a fake cluster")
    parser.add_argument("--doc", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "..", "protocol.md"))
    args = parser.parse_args()
    if args.self_test:
        failures = check_frames(args.doc)
        fake = FakeCluster()
        # Start at the follower: the client must follow the NotLeader redirect.
        failures += demo([fake.follower_addr])
    elif args.server:
        failures = demo(args.server) + demo_cancel(args.server) + demo_pushes(args.server)
    else:
        parser.error("give --server HOST:PORT or --self-test")
    print("demo FAILED" if failures else "demo passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
