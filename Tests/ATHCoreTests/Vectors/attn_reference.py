"""An independent ATTN/1 frame sealer on PyCA `cryptography`, to cross-check the Swift one.

Reads JSON {secret, session_id, frames: [{kind, sequence, payload}], channel?: {c2s, s2c,
client_nonce, server_nonce, channel_id}} (hex) on stdin, writes {key, iv, next_key, frames: [hex],
channel?: {c2s, s2c}} built only from docs/PROTOCOL.md section 11.
"""
import json
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand


def expand(secret: bytes, label: str, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, label.encode()).derive(secret)


def main() -> None:
    request = json.load(sys.stdin)
    secret = bytes.fromhex(request["secret"])
    session_id = bytes.fromhex(request["session_id"])
    key = expand(secret, "attn/1 key", 32)
    iv = expand(secret, "attn/1 iv", 12)
    next_key = expand(expand(secret, "attn/1 update", 32), "attn/1 key", 32)
    frames = []
    for frame in request["frames"]:
        sequence = frame["sequence"].to_bytes(8, "big")
        header = bytes([1, frame["kind"], 0, 0]) + session_id + sequence
        payload = bytes.fromhex(frame["payload"])
        plaintext = len(payload).to_bytes(4, "big") + payload
        plaintext += bytes(-len(plaintext) % 64)
        nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + sequence))
        frames.append((header + AESGCM(key).encrypt(nonce, plaintext, header)).hex())
    answer = {"key": key.hex(), "iv": iv.hex(), "next_key": next_key.hex(), "frames": frames}
    if "channel" in request:
        channel = {name: bytes.fromhex(value) for name, value in request["channel"].items()}
        salt = channel["client_nonce"] + channel["server_nonce"]
        info = b"attn/1 channel" + channel["channel_id"]
        answer["channel"] = {
            direction: HKDF(hashes.SHA256(), 32, salt, info).derive(channel[direction]).hex() for direction in ("c2s", "s2c")
        }
    json.dump(answer, sys.stdout)


main()
