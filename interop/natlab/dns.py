#!/usr/bin/env python3
"""The NAT lab's DNS resolver for network F (as a router's own resolver, e.g. dnsmasq).

Usage: dns.py <listen-ip> <name>=<ipv4> [<name>=<ipv4> ...]

Answers A queries for the given names over UDP; any other query for those names gets an
empty answer (NOERROR), any other name NXDOMAIN, at once, so a resolver's client never waits.
Standard library only; one datagram at a time; malformed queries are dropped.
"""
import socket
import struct
import sys

A, IN = 1, 1


def parse_name(packet, offset):
    """The question's name (lower case, no trailing dot) and the offset after it."""
    labels = []
    while True:
        if offset >= len(packet) or len(labels) > 127:
            raise ValueError("truncated name")
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        if length > 63:
            raise ValueError("compressed or invalid label in a question")
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def answer(packet, names):
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        raise ValueError("not a single-question query")
    name, end = parse_name(packet, 12)
    qtype, qclass = struct.unpack("!HH", packet[end:end + 4])
    question = packet[12:end + 4]
    records = b""
    if name in names:
        rcode, count = 0, 0
        if qtype == A and qclass == IN:
            # The question's name by pointer (offset 12), class IN, TTL 60, 4 bytes of address.
            records = struct.pack("!HHHIH", 0xC00C, A, IN, 60, 4) + socket.inet_aton(names[name])
            count = 1
    else:
        rcode, count = 3, 0  # NXDOMAIN
    # QR, the query's opcode and RD, RA; one question, the answers, no authority, no additional.
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!HHHHHH", ident, reply_flags, 1, count, 0, 0) + question + records


def main():
    listen = sys.argv[1]
    names = dict(arg.lower().rstrip(".").split("=", 1) for arg in sys.argv[2:])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    while True:
        packet, peer = sock.recvfrom(512)
        try:
            sock.sendto(answer(packet, names), peer)
        except (ValueError, struct.error, OSError):
            pass


if __name__ == "__main__":
    main()
