"""PROXY protocol headers (HAProxy doc/proxy-protocol.txt) as a load balancer sends them, for
end-to-end cases of `proxy_protocol: true` listeners: open a real socket, send one of these,
then the HTTP request or the TCP stream. Byte layouts match src/net/proxyproto.c's unit tests.
"""
import ipaddress
import struct

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst, sport, dport):
    """'PROXY TCP4 src dst sport dport\\r\\n' (TCP6 for IPv6 addresses)."""
    fam = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v1_unknown():
    return b"PROXY UNKNOWN\r\n"


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def v2(src, dst, sport, dport, tlvs=(), crc=False):
    """A v2 PROXY/STREAM header; tlvs are (type, bytes) pairs; crc adds a PP2_TYPE_CRC32C."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x21 if a.version == 6 else 0x11
    body = a.packed + b.packed + struct.pack(">HH", sport, dport)
    for t, v in tlvs:
        body += struct.pack(">BH", t, len(v)) + v
    if crc:
        body += struct.pack(">BH", 0x03, 4) + b"\0\0\0\0"
    hdr = bytearray(V2_SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body)
    if crc:
        hdr[-4:] = struct.pack(">I", _crc32c(bytes(hdr)))
    return bytes(hdr)


def v2_local():
    """A balancer's health check: LOCAL, no address; the connection's own address counts."""
    return V2_SIG + bytes([0x20, 0x00]) + b"\0\0"
