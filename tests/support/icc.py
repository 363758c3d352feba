"""A real ICC v2 matrix/TRC RGB profile built byte by byte (Adobe RGB (1998)-like, gamma 2.2).

PIL can only create sRGB and Lab profiles, and a test of colour management needs an RGB profile
that is *not* sRGB. The bytes follow ICC.1:2001-04 (header, tag table, desc/wtpt/XYZ/curv tags).
"""

from __future__ import annotations

import struct

import numpy as np

D50 = (0.9642, 1.0, 0.8249)
# Adobe RGB (1998) colorants, chromatically adapted to D50 (columns of its RGB -> XYZ matrix).
ADOBE_D50 = {
    "rXYZ": (0.6097, 0.3111, 0.0195),
    "gXYZ": (0.2053, 0.6257, 0.0609),
    "bXYZ": (0.1492, 0.0632, 0.7446),
}
GAMMA = 563 / 256  # 2.19921875, as Adobe RGB's curv tag stores it
# XYZ (D50) -> linear sRGB, Bradford-adapted (Lindbloom).
XYZ_D50_TO_SRGB = np.array(
    [
        [3.1338561, -1.6168667, -0.4906146],
        [-0.9787684, 1.9161415, 0.0334540],
        [0.0719453, -0.2289914, 1.4052427],
    ]
)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x, y, z) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (
        b"desc"
        + b"\0" * 4
        + struct.pack(">I", len(ascii_))
        + ascii_
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )


def wide_gamut_profile(description: str = "Test wide-gamut RGB (Adobe-like, gamma 2.2)") -> bytes:
    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(GAMMA * 256)) + b"\0\0"
    tags = [
        ("desc", _desc(description)),
        ("wtpt", _xyz(*D50)),
        *[(k, _xyz(*v)) for k, v in ADOBE_D50.items()],
        ("rTRC", curv),
        ("gTRC", curv),
        ("bTRC", curv),
        ("cprt", b"text" + b"\0" * 4 + b"No copyright, test data\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = [], b""
    for sig, data in tags:
        table.append(struct.pack(">4sII", sig.encode(), offset + len(body), len(data)))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes([2, 0x10, 0, 0])
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15(D50[0])
        + _s15(D50[1])
        + _s15(D50[2])
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


def expected_srgb(rgb: np.ndarray) -> np.ndarray:
    """The same conversion computed independently with numpy (colorimetric, clipped)."""
    linear = (rgb.astype(float) / 255.0) ** GAMMA
    m = np.stack([ADOBE_D50["rXYZ"], ADOBE_D50["gXYZ"], ADOBE_D50["bXYZ"]], axis=1)
    srgb_lin = np.clip(linear @ m.T @ XYZ_D50_TO_SRGB.T, 0, 1)
    encoded = np.where(
        srgb_lin <= 0.0031308, 12.92 * srgb_lin, 1.055 * srgb_lin ** (1 / 2.4) - 0.055
    )
    return np.round(encoded * 255).astype(np.uint8)
