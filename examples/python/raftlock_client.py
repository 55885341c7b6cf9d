"""A small raftlock client, written from protocol.md alone.

Speaks protocol version 1 over TCP: frames of a u32 big-endian length plus a MessagePack map
with a ``type`` field. Handles the Hello handshake, request ids (many in flight, answers matched
by id), sessions with a keep-alive thread, NotLeader redirects, and exactly-once retries (the
same ``seq`` on every retry of a mutating request), cancelling a queued acquire, and push
events (frames with id 0 that answer no request: ``Client.next_push``, ``Client.revoked``).

    client = Client(["127.0.0.1:7400"])
    client.open_session(ttl_ms=10_000)
    fence = client.acquire("build-cache")
    client.append("build.log", "build-cache", fence, b"ok\\n")
    data, size = client.read("build.log", 0, 1024)
    client.release("build-cache")
    client.close()
"""

import itertools
import os
import queue
import socket
import struct
import threading
import time

import msgpack

VERSION = 1
MAX_FRAME = 4 * 1024 * 1024
HEADER = struct.Struct(">I")

# Errors after which the same request (same seq) may be re-sent, to the current leader.
RETRYABLE = {"NotLeader", "Timeout", "ShuttingDown", "Internal", "TooManyRequests"}

# Marks "use the client's default request timeout" (None means wait without limit).
DEFAULT = object()


class RaftLockError(Exception):
    """An Error response: ``code`` is the stable code name, ``message`` the server's detail."""

    def __init__(self, code, message, leader_addr=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.leader_addr = leader_addr


class ConnectionLost(Exception):
    """The connection closed or failed; outstanding answers are unknown."""


def encode_frame(message):
    """One complete frame: u32 BE body length + MessagePack map (bytes as bin, str as str)."""
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def _recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise ConnectionLost("connection closed by the server")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock):
    """Reads one frame and returns its decoded map."""
    (length,) = HEADER.unpack(_recv_exact(sock, 4))
    if length > MAX_FRAME:
        raise ConnectionLost(f"server frame of {length} bytes exceeds {MAX_FRAME}")
    message = msgpack.unpackb(_recv_exact(sock, length), raw=False)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ConnectionLost("server sent a body that is not a map with a string type")
    return message


class Connection:
    """One handshaken connection to one node. Thread-safe: many requests may be in flight."""

    def __init__(self, addr, timeout=5.0, on_push=None):
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        self.on_push = on_push  # called (on the reader thread) with each push event
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self._pending = {}  # id -> queue.Queue of responses
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)  # ids are non-zero
        self.closed = None  # the reason, once closed
        self.sock.sendall(encode_frame({"type": "Hello", "version": VERSION, "role": "client"}))
        welcome = read_frame(self.sock)
        if welcome["type"] == "Error":
            self.sock.close()
            raise RaftLockError(welcome["code"], welcome.get("message", ""))
        if welcome["type"] != "Welcome" or welcome.get("version") != VERSION:
            self.sock.close()
            raise ConnectionLost(f"unexpected handshake answer {welcome!r}")
        self.welcome = welcome
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self):
        try:
            while True:
                message = read_frame(self.sock)
                rid = message.get("id", 0)
                if rid == 0 and message.get("type") != "Error":
                    # A push event (protocol.md §5): answers no request. A hint only.
                    if self.on_push is not None:
                        self.on_push(message)
                    continue
                if rid == 0:
                    # Connection-level error (id 0): some close the connection, all concern it.
                    code = message.get("code", "?")
                    if code in ("BadRequest", "UnknownType"):
                        continue  # a frame we sent was unreadable; its caller times out
                    raise ConnectionLost(f"{code}: {message.get('message', '')}")
                with self._pending_lock:
                    waiter = self._pending.get(rid)
                if waiter is not None:
                    waiter.put(message)
        except (ConnectionLost, OSError, ValueError, msgpack.UnpackException) as e:
            self._fail(e)

    def _fail(self, reason):
        self.closed = reason
        try:
            self.sock.close()
        except OSError:
            pass
        with self._pending_lock:
            for waiter in self._pending.values():
                waiter.put(None)

    def close(self):
        self._fail(ConnectionLost("closed by the client"))

    def request(self, message, timeout=30.0, on_queued=None):
        """Sends one request (an ``id`` is assigned) and returns its final answer.

        ``Queued`` is an interim answer for Acquire: it is passed to ``on_queued`` and the wait
        goes on. Raises RaftLockError for an Error answer, ConnectionLost if the connection
        fails or no answer came within ``timeout`` seconds (outcome unknown: retry same seq).
        """
        if self.closed is not None:
            raise ConnectionLost(str(self.closed))
        rid = next(self._ids)
        message = dict(message)
        message["id"] = rid
        # Put `type` first, then `id`, as the server writes its own messages (order is free).
        frame_fields = {"type": message.pop("type"), "id": rid}
        frame_fields.update({k: v for k, v in message.items() if k != "id"})
        waiter = queue.Queue()
        with self._pending_lock:
            self._pending[rid] = waiter
        try:
            with self._send_lock:
                self.sock.sendall(encode_frame(frame_fields))
            deadline = time.monotonic() + timeout if timeout is not None else None
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    answer = waiter.get(timeout=remaining)
                except queue.Empty:
                    raise ConnectionLost(f"no answer to {frame_fields['type']} within {timeout}s")
                if answer is None:
                    raise ConnectionLost(str(self.closed))
                if answer["type"] == "Queued":
                    if on_queued is not None:
                        on_queued(answer["position"])
                    continue
                if answer["type"] == "Error":
                    raise RaftLockError(
                        answer["code"], answer.get("message", ""), answer.get("leader_addr")
                    )
                return answer
        except OSError as e:
            self._fail(e)
            raise ConnectionLost(str(e))
        finally:
            with self._pending_lock:
                self._pending.pop(rid, None)


class Client:
    """A session-holding client that follows the leader and retries safely."""

    def __init__(self, servers, attempts=20, request_timeout=30.0):
        self.servers = list(servers)
        self.attempts = attempts
        self.request_timeout = request_timeout
        self.conn = None
        self.session = None
        self.token = None
        self.ttl_ms = None
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._leader_hint = None
        self._keepalive_stop = threading.Event()
        self._keepalive = None
        self.last_renewal = None  # monotonic time the last answered KeepAlive was sent
        self.waiting = {}  # lock -> seq of this client's Acquire still waiting for an answer
        # Push events for this client's session (protocol.md §5), newest last; hints only.
        self.pushes = queue.Queue()
        self.revoked = {}  # (lock, fence) -> reason, from Revoked pushes: stop that work now
        self.session_ended = None  # the reason of a SessionExpired push

    # --- connections and redirects ---------------------------------------------------------

    def _connection(self):
        with self._conn_lock:
            if self.conn is not None and self.conn.closed is None:
                return self.conn
            candidates = ([self._leader_hint] if self._leader_hint else []) + self.servers
            last = None
            for addr in candidates:
                try:
                    conn = Connection(addr, on_push=self._on_push)
                except (OSError, ConnectionLost, RaftLockError) as e:
                    last = e
                    continue
                leader_addr = conn.welcome.get("leader_addr")
                if leader_addr and leader_addr != addr:
                    # Welcome names another leader: go there straight away if we can.
                    try:
                        leader = Connection(leader_addr, on_push=self._on_push)
                        conn.close()
                        conn = leader
                    except (OSError, ConnectionLost, RaftLockError):
                        pass
                self.conn = conn
                self._leader_hint = conn.addr
                return conn
            raise ConnectionLost(f"no server reachable: {last}")

    def _on_push(self, event):
        """Keeps this session's pushes: Revoked and SessionExpired are also recorded, so work
        can stop at once. Pushes may be lost; the lease check (session_maybe_lost) is what
        keeps the work safe."""
        if event.get("session") != self.session:
            return
        if event["type"] == "Revoked":
            self.revoked[(event["lock"], event["fence"])] = event["reason"]
        elif event["type"] == "SessionExpired":
            self.session_ended = event["reason"]
        self.pushes.put(event)

    def next_push(self, timeout=10.0, kind=None):
        """The next push event for this session (of type ``kind`` if given, skipping others),
        or None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self.pushes.get(timeout=left)
            except queue.Empty:
                return None
            if kind is None or event["type"] == kind:
                return event

    def _drop(self, leader_addr=None):
        with self._conn_lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self._leader_hint = leader_addr

    def call(self, message, timeout=DEFAULT, on_queued=None):
        """Sends ``message`` until it gets a final answer, following NotLeader redirects and
        re-sending it unchanged (same seq/nonce, so at most once) after retryable failures."""
        last = None
        for attempt in range(self.attempts):
            try:
                conn = self._connection()
                wait = self.request_timeout if timeout is DEFAULT else timeout
                return conn.request(message, wait, on_queued=on_queued)
            except RaftLockError as e:
                if e.code not in RETRYABLE:
                    raise
                last = e
                if e.code == "NotLeader":
                    self._drop(e.leader_addr)
                    if e.leader_addr is None:
                        time.sleep(0.5)  # an election is under way
                else:
                    time.sleep(min(0.05 * 2**attempt, 1.0))
            except ConnectionLost as e:
                last = e
                self._drop(None)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        raise last

    def _next_seq(self):
        with self._seq_lock:
            return next(self._seq)

    # --- sessions --------------------------------------------------------------------------

    def open_session(self, ttl_ms=10_000, keepalive=True, owner=None):
        """Opens a session (deduplicated by a random nonce) and starts keep-alives. ``owner``
        (at most 256 bytes) is shown to whoever lists locks or sessions."""
        nonce = int.from_bytes(os.urandom(8), "big")
        message = {"type": "OpenSession", "nonce": nonce, "ttl_ms": ttl_ms}
        if owner is not None:
            message["owner"] = owner
        answer = self.call(message)
        self.session, self.token, self.ttl_ms = answer["session"], answer["token"], answer["ttl_ms"]
        self.last_renewal = time.monotonic()
        if keepalive:
            self._keepalive_stop.clear()
            self._keepalive = threading.Thread(target=self._keepalive_loop, daemon=True)
            self._keepalive.start()
        return self.session

    def keep_alive(self):
        """Renews the lease once; returns the lease length."""
        sent = time.monotonic()
        answer = self.call({"type": "KeepAlive", "session": self.session, "token": self.token})
        self.last_renewal = sent
        return answer["ttl_ms"]

    def _keepalive_loop(self):
        interval = self.ttl_ms / 3000.0
        while not self._keepalive_stop.wait(interval):
            try:
                self.keep_alive()
            except RaftLockError as e:
                if e.code == "SessionExpired":
                    return
            except ConnectionLost:
                pass  # the next round reconnects

    def session_maybe_lost(self):
        """True once ttl has passed since the last answered keep-alive was sent."""
        return time.monotonic() - self.last_renewal > self.ttl_ms / 1000.0

    def _session_request(self, kind, **fields):
        message = {"type": kind, "session": self.session, "token": self.token}
        message["seq"] = self._next_seq()
        message.update(fields)
        return message

    def close(self):
        """Closes the session (releasing its locks) and the connection."""
        self._keepalive_stop.set()
        if self.session is not None:
            try:
                self.call(self._session_request("CloseSession"))
            except RaftLockError as e:
                if e.code != "SessionExpired":  # a retried close that already succeeded
                    raise
            self.session = None
        self._drop(None)

    # --- locks and files -------------------------------------------------------------------

    def acquire(self, lock, mode="exclusive", wait_ms=None, hold_ms=None, on_queued=None):
        """Acquires ``lock``; returns its fence. wait_ms: 0 try once, n ms, None forever."""
        message = self._session_request(
            "Acquire", lock=lock, mode=mode, wait_ms=wait_ms, hold_ms=hold_ms
        )
        self.waiting[lock] = message["seq"]
        try:
            # A retried queued Acquire (same seq) re-attaches to its queue place.
            answer = self.call(message, timeout=None if wait_ms is None else wait_ms / 1000 + 30,
                               on_queued=on_queued)
        finally:
            self.waiting.pop(lock, None)
        if answer["type"] == "Cancelled":
            raise RaftLockError("Cancelled", f"the acquire of {lock} was cancelled")
        return answer["fence"]

    def cancel(self, lock):
        """Cancels this client's waiting acquire of ``lock`` (its ``acquire`` call then raises
        RaftLockError("Cancelled")). Returns False if it no longer waits (``NotWaiting``): if it
        was granted meanwhile, the lock is held and must be released."""
        acquire_seq = self.waiting.get(lock)
        if acquire_seq is None:
            return False
        try:
            self.call(self._session_request("Cancel", lock=lock, acquire_seq=acquire_seq))
            return True
        except RaftLockError as e:
            if e.code == "NotWaiting":
                return False
            raise

    def sessions(self):
        """The leader's live sessions: id, owner, ttl and time since their lease was renewed."""
        return self.call({"type": "Sessions"})["sessions"]

    def release(self, lock):
        """Releases a held lock."""
        self.call(self._session_request("Release", lock=lock))

    def append(self, file, lock, fence, data):
        """Appends ``data`` under the exclusive ``fence`` of ``lock``; returns (offset, size)."""
        answer = self.call(
            self._session_request("Append", file=file, lock=lock, fence=fence, data=bytes(data))
        )
        return answer["offset"], answer["size"]

    def read(self, file, offset=0, length=1 << 20, stale=False):
        """Reads up to ``length`` bytes (at most 1 MiB per call); returns (data, file_size)."""
        answer = self.call(
            {"type": "Read", "file": file, "offset": offset, "len": length, "stale": stale}
        )
        return answer["data"], answer["size"]

    def locks(self, prefix=None, stale=False):
        """Lists locks held or waited for."""
        return self.call({"type": "Locks", "prefix": prefix, "stale": stale})["locks"]

    def status(self):
        """The answering node's view of the cluster."""
        return self.call({"type": "Status"})
