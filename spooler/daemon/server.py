"""The daemon's socket: accept, check the peer, read frames, dispatch, reply.

Connections are plain non-blocking sockets driven by the event loop's reader callbacks (not
asyncio streams): we need ``recvmsg`` for the descriptors ``ts -nf`` passes, and callbacks keep
a request's cost to a few microseconds of Python.

Replies to requests that changed the job list wait for one fsync shared by every request handled
in the same turn of the loop (group commit), so a printed job id is always on disk.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from spooler import protocol
from spooler.daemon.caller import Caller, caller_of
from spooler.errors import SpoolerError
from spooler.protocol import RequestError
from spooler.text import brief

log = logging.getLogger("spooler")

REQUEST_TIMEOUT = 10.0  # a request must arrive whole within this long of the previous one
_RECV = 256 * 1024
_FDS_SPACE = socket.CMSG_SPACE(2 * array.array("i").itemsize)
_PEERCRED = struct.Struct("3i")


# A request handler, bound to the daemon core: the request map in, the reply map out (or None
# when it replies later, through the connection).
Handler = Callable[[dict[str, Any], "Connection"], "dict[str, Any] | None"]


class Connection:
    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.fds: list[int] = []  # descriptors received with the current request
        self.closed = False
        self.close_after_send = False
        self.failing = False  # an error reply is on its way: read no further requests
        self.served = 0  # requests read whole so far
        self.deferred = 0  # replies still owed (``wait``, ``-f``): no deadline, no new request meanwhile
        self.on_close: list[Callable[[], None]] = []
        # Who is asking, on a multi-user daemon (None on a personal one, which serves its owner only).
        self.caller: Caller | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self._arm_deadline()
        server.loop.add_reader(sock.fileno(), self._readable)

    def _arm_deadline(self) -> None:
        """A request must arrive whole within REQUEST_TIMEOUT of the previous reply (or of the
        connection), however its bytes trickle in."""
        self._disarm_deadline()
        self.deadline = self.server.loop.call_later(REQUEST_TIMEOUT, self._timed_out)

    def _disarm_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _timed_out(self) -> None:
        self.deadline = None
        if self.deferred or self.failing:
            return
        if self.inbuf or not self.served:  # a request never came, or never finished: say why
            self.fail(protocol.E_BAD_REQUEST, f"no complete request within {REQUEST_TIMEOUT:g} s")
        else:  # idle between requests (an API client): just close
            self.close()

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(_RECV, _FDS_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.fds.extend(protocol.received_fds(ancdata))
        if not data:
            self.close()
            return
        if self.failing:
            return  # whatever follows a bad frame is not read
        self.inbuf += data
        if len(self.inbuf) > protocol.MAX_FRAME + protocol.HEADER.size:
            self.fail(protocol.E_BAD_REQUEST, "too much data sent ahead of the replies")
            return
        self._parse()

    def _parse(self) -> None:
        header = protocol.HEADER.size
        while not self.closed and not self.failing and not self.deferred and len(self.inbuf) >= header:
            try:
                length = protocol.frame_length(bytes(self.inbuf[:header]))
            except protocol.FrameError as exc:
                self.fail(protocol.E_BAD_REQUEST, str(exc))
                return
            if len(self.inbuf) < header + length:
                return
            body = bytes(self.inbuf[header : header + length])
            del self.inbuf[: header + length]
            self.served += 1
            self._disarm_deadline()
            self.server.dispatch(self, body)

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    def defer(self) -> None:
        """The handler will reply later, through :meth:`reply_deferred`."""
        self.deferred += 1

    def resume(self) -> None:
        """A deferred request goes on being handled, through :meth:`Server.answer`."""
        self.deferred -= 1

    def reply_deferred(self, message: dict[str, Any]) -> None:
        self.deferred -= 1
        self.reply(message)

    def reply(self, message: dict[str, Any]) -> None:
        self.server.send_after_commit(self, message)

    def fail(self, code: str, message: str) -> None:
        """Answer with an error and close, after the replies already owed (in order)."""
        self.failing = True
        self._disarm_deadline()
        self.server.send_after_commit(self, protocol.error_reply(code, message), close=True)

    def send(self, message: dict[str, Any], close: bool = False) -> None:
        if self.closed:
            return
        try:
            frame = protocol.encode(message)
        except protocol.FrameError as exc:
            frame = protocol.encode(
                protocol.error_reply(protocol.E_INTERNAL, f"the reply is too large: {exc}")
            )
        self.outbuf += frame
        if close:
            self.close_after_send = True
        self._flush()
        if self.closed or self.failing or self.deferred:
            return
        self._arm_deadline()  # the next request's time starts now
        if self.inbuf:
            self._parse()

    def _flush(self) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                self.server.loop.add_writer(self.sock.fileno(), self._writable)
                return
            except OSError:
                self.close()
                return
            del self.outbuf[:sent]
        self.server.loop.remove_writer(self.sock.fileno())
        if self.close_after_send:
            self.close()

    def _writable(self) -> None:
        self._flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
        loop = self.server.loop
        loop.remove_reader(self.sock.fileno())
        loop.remove_writer(self.sock.fileno())
        for fd in self.take_fds():
            with contextlib.suppress(OSError):
                os.close(fd)
        for callback in self.on_close:
            callback()
        self.sock.close()
        self.server.forget(self)


class Server:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        handlers: Mapping[str, Handler],
        commit: Callable[[], None],
        max_connections: int,
        multi_user: bool = False,
        admin_group: str | None = None,
    ) -> None:
        """``commit``: makes the changes of the requests handled so far durable; replies wait for it.
        ``multi_user``: serve every local user, each connection knowing its caller; else only
        our own uid."""
        self.loop = loop
        self.commit = commit
        self.listener = listener
        self.handlers = handlers
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self.uid = os.getuid()
        self.multi_user = multi_user
        self.admin_group = admin_group
        self._pending: list[tuple[Connection, dict[str, Any], bool]] = []
        self._accepting = False
        self.stopping = False
        listener.setblocking(False)
        self._resume_accepting()

    def _resume_accepting(self) -> None:
        if not self._accepting and not self.stopping:
            self._accepting = True
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self.listener.fileno())

    def _accept(self) -> None:
        for _ in range(64):
            if len(self.connections) >= self.max_connections:
                # Excess clients wait in the listen backlog until a connection closes.
                self._pause_accepting()
                return
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            _pid, uid, gid = _PEERCRED.unpack(creds)
            conn = Connection(self, sock)
            self.connections.add(conn)
            if self.multi_user:
                conn.caller = caller_of(uid, gid, self.admin_group)
            elif uid != self.uid:
                log.warning("refused a connection from uid %d", uid)
                conn.fail(protocol.E_DENIED, f"permission denied: this spooler belongs to uid {self.uid}")

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if len(self.connections) < self.max_connections:
            self._resume_accepting()

    def dispatch(self, conn: Connection, body: bytes) -> None:
        try:
            message = protocol.decode_body(body)
        except protocol.FrameError as exc:
            conn.fail(protocol.E_BAD_REQUEST, str(exc))
            return
        version = message.get("v")
        if type(version) is not int or version != protocol.PROTOCOL_VERSION:
            conn.fail(
                protocol.E_VERSION,
                f"the running daemon speaks protocol {protocol.PROTOCOL_VERSION} and this ts speaks "
                f"{brief(version, 80)}: restart it with ts -K (queued jobs are kept) and retry",
            )
            return
        op = message.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.fail(protocol.E_BAD_REQUEST, f"unknown request type {brief(op, 80)}")
            return
        self.answer(conn, op, lambda: handler(message, conn))

    def answer(self, conn: Connection, op: object, call: Callable[[], dict[str, Any] | None]) -> None:
        """Run a request's handler (or, after :meth:`Connection.resume`, the rest of one that
        replied later) and send its reply, if it has one now."""
        try:
            reply = call()
        except RequestError as exc:
            reply = protocol.error_reply(exc.code, str(exc))
        except SpoolerError as exc:  # e.g. a --where expression that does not parse
            reply = protocol.error_reply(protocol.E_BAD_REQUEST, str(exc))
        except Exception as exc:  # a bug must cost one request, never the daemon
            log.exception("request %r failed", op)
            reply = protocol.error_reply(protocol.E_INTERNAL, f"internal error: {exc}")
        finally:
            for fd in conn.take_fds():  # descriptors the handler did not keep
                with contextlib.suppress(OSError):
                    os.close(fd)
        if reply is not None:
            conn.reply(reply)

    def send_after_commit(self, conn: Connection, message: dict[str, Any], close: bool = False) -> None:
        if not self._pending:
            self.loop.call_soon(self._commit_and_send)
        self._pending.append((conn, message, close))

    def _commit_and_send(self) -> None:
        pending, self._pending = self._pending, []
        try:
            self.commit()
        except OSError as exc:
            log.error("could not write the save-list: %s", exc)
            for conn, _, _ in pending:
                conn.send(
                    protocol.error_reply(protocol.E_INTERNAL, f"could not write the save-list: {exc}"), True
                )
            return
        for conn, message, close in pending:
            conn.send(message, close)

    def close(self) -> None:
        self.stopping = True
        self._pause_accepting()
        self.listener.close()
        if self._pending:
            self._commit_and_send()
        for conn in list(self.connections):
            conn.close()
