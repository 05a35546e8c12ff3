"""Secure aggregation with pairwise masks (after Bonawitz et al., CCS 2017): the coordinator
learns the sum of the clients' vectors and nothing about any one of them, and can still finish
a round when clients drop after masking (pure functions; the round's flow is in coordinator.py).

[Note: secure aggregation]
Each round, every sampled client k makes an X25519 key pair and publishes its public key. Any two
clients k < j derive the same seed from their Diffie-Hellman secret (SHA-256 of it and the
round) and from it the same pseudo-random mask m_kj of 64-bit integers. Client k encodes its
vector in fixed point (2^-32 steps) as integers mod 2^64 and sends
    y_k = v_k + Σ_{j > k} m_kj - Σ_{j < k} m_jk   (mod 2^64),
which alone is uniformly distributed whatever v_k is. Over every client the masks cancel, so the
coordinator's sum of the y_k is the sum of the v_k. Each client also splits its private key
into Shamir shares (threshold t of the n sampled clients, over the prime field 2^521 - 1) and
hands one to each other client. If client j drops after masking, its masks remain in the others'
vectors: the coordinator asks the survivors for their shares of j's key, rebuilds it from any t,
recomputes m_kj for every survivor k and removes them.

What it protects against: a coordinator that follows the protocol but looks at what it
receives (honest-but-curious) learns only the sum of the survivors' vectors; so does any
coalition of fewer than t clients. What it does not: a coordinator that lies about who dropped
can ask for a live client's key shares and unmask that client's vector (Bonawitz et al. add a
second, self mask and a consistency round against this; not built here); a coalition of t or
more clients; clients that send wrong values (no integrity); anything the sum itself reveals
(with two clients, each learns the other's vector from the sum and its own). Shares here travel
through the coordinator in the clear, inside one process tree; across machines they must be
encrypted under the pairwise key.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np

SCALE = float(2 ** 32)
PRIME = 2 ** 521 - 1  # a Mersenne prime above any 32-byte secret


def keypair() -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return private, key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)


def pair_seed(private: bytes, peer_public: bytes, round_index: int) -> int:
    """The seed two clients share: SHA-256 of their Diffie-Hellman secret and the round."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    secret = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return int.from_bytes(hashlib.sha256(secret + round_index.to_bytes(8, "little")).digest(), "little")


def mask(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2 ** 64, size=length, dtype=np.uint64)


def encode(values: np.ndarray) -> np.ndarray:
    """Fixed point, two's complement, as integers mod 2^64."""
    return np.round(np.asarray(values, dtype=np.float64) * SCALE).astype(np.int64).view(np.uint64)


def decode(values: np.ndarray) -> np.ndarray:
    return values.view(np.int64).astype(np.float64) / SCALE


def masked(client: int, values: np.ndarray, private: bytes, publics: dict[int, bytes], round_index: int) -> np.ndarray:
    """y_k: the encoded vector plus the masks shared with every other client of the round."""
    out = encode(values)
    with np.errstate(over="ignore"):
        for peer, public in publics.items():
            if peer == client:
                continue
            m = mask(pair_seed(private, public, round_index), len(out))
            out = out + m if client < peer else out - m
    return out


def remove_dropped(total: np.ndarray, survivors: list[int], dropped: dict[int, bytes], publics: dict[int, bytes],
                   round_index: int) -> np.ndarray:
    """The sum of the survivors' y_k with the masks they shared with dropped clients removed
    (`dropped`: each dropped client's private key, rebuilt from shares)."""
    with np.errstate(over="ignore"):
        for j, private in dropped.items():
            for k in survivors:
                m = mask(pair_seed(private, publics[k], round_index), len(total))
                total = total - m if k < j else total + m  # survivor k added +m_kj when k < j
    return total


def split_secret(secret: bytes, holders: int, threshold: int) -> list[tuple[int, int]]:
    """Shamir shares (x, y), x = 1..holders, any `threshold` of which rebuild `secret`."""
    if not 1 <= threshold <= holders:
        raise ValueError(f"threshold {threshold} must be between 1 and {holders}")
    coefficients = [int.from_bytes(secret, "little")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, holders + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def recover_secret(shares: list[tuple[int, int]], length: int = 32) -> bytes:
    """Lagrange interpolation at 0 over the prime field."""
    total = 0
    for i, (xi, yi) in enumerate(shares):
        num, den = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    if total >= 1 << (8 * length):
        raise ValueError("these shares do not rebuild a key (fewer than the threshold, or wrong ones)")
    return total.to_bytes(length, "little")
