"""The message pattern the interop tests publish and check, the same as
colo-py-peer's (colo_py_peer.cpp): message i is 8 + (i * 131) % 1017 bytes,
i as 8 little-endian bytes, then BASE[(i * 7) % 1024 ...]."""

BASE = bytes((((k * 131 + 7) ^ (k >> 3)) & 0xFF) for k in range(2048))


def size(i: int) -> int:
    return 8 + (i * 131) % 1017


def payload(i: int) -> bytes:
    offset = (i * 7) % 1024
    return i.to_bytes(8, "little") + BASE[offset : offset + size(i) - 8]
