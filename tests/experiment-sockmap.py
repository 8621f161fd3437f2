#!/usr/bin/env python3
"""What a kernel data path would give the egress gate: one TCP stream through
a proxy hop made three ways on this host's loopback, raw bytes (no TLS).

* direct:  sender -> receiver, no hop (what an Open container has);
* splice:  sender -> proxy -> receiver, the proxy splicing through a 64 KiB
           pipe, as the gate does (agent/src/egress/splice.rs);
* sockmap: the same hop handed to the kernel once set up: both sockets in a
           BPF sockhash keyed by each other's cookie, an sk_skb verdict
           program (11 instructions, below) redirecting what one receives
           out of the other, so no process touches the stream.

The proxy says when its hop is ready (as the gate's `200`), and only then
the receiver speaks first (one byte, as a TLS client does), then stops at
the byte count, or after DEADLINE seconds (then the
stream "stalled"). With `close`, the sockmap proxy instead forwards the
sender's end (FIN is not redirected: it shuts the other side down when it
sees the end) and the receiver reads to its end: how much arrives shows
whether bytes still queued in the kernel's redirect are lost.

Run as root (BPF): python3 tests/experiment-sockmap.py [MiB] [rounds] [close]
Recorded in BENCHMARKS.md (issue 16); not part of `make bench`.
"""

import ctypes
import os
import select
import socket
import struct
import sys
import threading
import time

MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CLOSE = len(sys.argv) > 3 and sys.argv[3] == "close"
DEADLINE = 20
PIPE = 64 * 1024
libc = ctypes.CDLL(None, use_errno=True)
keep = []  # buffers the kernel reads from while a call runs


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(321, cmd, buf, 128)  # x86_64 __NR_bpf
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def addr(data):
    b = ctypes.create_string_buffer(data)
    keep.append(b)
    return ctypes.addressof(b)


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def sockhash():
    """A sockhash with the verdict program attached: a socket's bytes go
    out of the socket stored under its own cookie."""
    m = bpf(0, struct.pack("IIII", 18, 8, 8, 1024))  # MAP_CREATE SOCKHASH
    prog = b"".join([
        insn(0xBF, 6, 1),                  # r6 = skb
        insn(0x85, imm=46),                # r0 = get_socket_cookie(skb)
        insn(0x7B, 10, 0, -8),             # *(u64 *)(r10 - 8) = r0
        insn(0xBF, 1, 6),                  # r1 = skb
        insn(0x18, 2, 1, 0, m), insn(0),   # r2 = the map
        insn(0xBF, 3, 10),                 # r3 = r10
        insn(0x07, 3, 0, 0, -8),           # r3 -= 8 (the key)
        insn(0xB7, 4, 0, 0, 0),            # r4 = 0: out of, not into
        insn(0x85, imm=72),                # sk_redirect_hash(skb, map, key, 0)
        insn(0x95),                        # exit
    ])
    p = bpf(5, struct.pack("IIQQIIQII16sII", 14, len(prog) // 8, addr(prog),
                           addr(b"GPL"), 0, 0, 0, 0, 0, b"crops", 0, 38))
    bpf(8, struct.pack("IIII", m, p, 38, 0))  # PROG_ATTACH SK_SKB_VERDICT
    return m


def cookie(s):
    return struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]


def put(m, key, s):
    bpf(2, struct.pack("IIQQQ", m, 0, addr(struct.pack("Q", key)),
                       addr(struct.pack("Q", s.fileno())), 0))


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def send(srv):
    c, _ = srv.accept()
    c.recv(1)  # the receiver speaks first, as a TLS client does
    chunk = b"x" * (1 << 20)
    for _ in range(MIB):
        c.sendall(chunk)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)


def splice_hop(prx, port, done):
    a, _ = prx.accept()
    b = socket.create_connection(("127.0.0.1", port))
    a.sendall(b"+")
    b.sendall(a.recv(1))
    r, w = os.pipe()
    while n := os.splice(b.fileno(), w, PIPE):
        while n:
            n -= os.splice(r, a.fileno(), n)
    a.shutdown(socket.SHUT_WR)
    done.wait()


def sockmap_hop(m, prx, port, done):
    a, _ = prx.accept()
    b = socket.create_connection(("127.0.0.1", port))
    put(m, cookie(a), b)
    put(m, cookie(b), a)
    a.sendall(b"+")  # as the gate's "200": only now may the client speak
    if CLOSE:
        p = select.poll()
        p.register(b.fileno(), select.POLLRDHUP)
        p.poll()
        a.shutdown(socket.SHUT_WR)
    done.wait()


def transfer(mode, m):
    srv, prx, done = listener(), listener(), threading.Event()
    port = srv.getsockname()[1]
    threading.Thread(target=send, args=(srv,), daemon=True).start()
    if mode == "splice":
        hop = threading.Thread(target=splice_hop, args=(prx, port, done))
    elif mode == "sockmap":
        hop = threading.Thread(target=sockmap_hop, args=(m, prx, port, done))
    if mode != "direct":
        hop.daemon = True
        hop.start()
        port = prx.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(DEADLINE)
        if mode != "direct":
            c.recv(1)
        c.sendall(b"!")
        buf, got, t = bytearray(1 << 20), 0, time.time()
        try:
            while CLOSE or got < MIB << 20:
                n = c.recv_into(buf)
                if n == 0:
                    break
                got += n
        except socket.timeout:
            pass
        os.write(w, struct.pack("Qd", got, time.time() - t))
        os._exit(0)
    got, secs = struct.unpack("Qd", os.read(r, 16))
    os.waitpid(pid, 0)
    done.set()
    if got < MIB << 20:
        return f"{got >> 20} of {MIB} MiB, then nothing for {DEADLINE} s"
    return f"{got / secs / 1e6:.0f} MB/s"


m = sockhash()
print(f"{MIB} MiB over loopback, {ROUNDS} rounds" + (", close forwarded" if CLOSE else ""))
for k in range(ROUNDS):
    for mode in ["direct", "splice", "sockmap"]:
        print(f"  round {k + 1} {mode:<8} {transfer(mode, m)}", flush=True)
