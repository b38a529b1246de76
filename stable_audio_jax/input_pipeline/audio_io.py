"""Audio decoding, resampling, channel conversion and FLAC/WAV encoding.

All waveforms are float32 numpy arrays laid out `[num_samples, channels]` (channels last), the
layout soundfile and soxr use natively, so no transposes are needed on the host.

Decoding goes through `soundfile` (libsndfile: WAV, FLAC, OGG, MP3, AIFF, ...), resampling through
`soxr` (fast, no numba start-up cost). Anything that cannot be decoded raises `AudioDecodeError`,
which carries a short machine-readable `reason` ("unreadable" or "empty") for reports.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Union

import numpy as np
import soundfile as sf
import soxr

AudioSource = Union[bytes, bytearray, memoryview, str, os.PathLike]

# Subtypes whose samples fit exactly into 16-bit FLAC; everything else (24/32-bit PCM, float, and
# lossy codecs that decode to float) is stored as 24-bit FLAC, the deepest FLAC libsndfile writes.
_SIXTEEN_BIT_OR_LESS = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "DWVW_12", "DWVW_16"})

# Frames decoded per block when streaming a file (bounds memory for hour-long inputs).
_BLOCK_FRAMES = 1 << 18


class AudioDecodeError(ValueError):
    """Raised when audio data cannot be decoded or holds no samples.

    Attributes:
      reason: "unreadable" (not a format libsndfile understands, corrupt, or missing) or "empty"
        (zero bytes or zero samples).
    """

    def __init__(self, message: str, *, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts about an audio file or buffer."""

    sample_rate: int
    num_channels: int
    num_samples: int  # as declared by the header; lossy formats may decode to a slightly different count
    subtype: str | None  # soundfile subtype, e.g. "PCM_16", "FLOAT", "MPEG_LAYER_III"
    format: str | None  # soundfile container, e.g. "WAV", "FLAC"


def _describe(source: AudioSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return os.fspath(source)


def open_audio(source: AudioSource) -> sf.SoundFile:
    """Opens a file path or an in-memory encoded buffer for reading.

    Raises:
      AudioDecodeError: the source is missing, zero bytes long, or not decodable by libsndfile.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError("audio buffer is empty (0 bytes)", reason="empty")
        target = io.BytesIO(bytes(source))
    else:
        path = os.fspath(source)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise AudioDecodeError(f"cannot access audio file {path!r}: {e}") from e
        if size == 0:
            raise AudioDecodeError(f"audio file {path!r} is empty (0 bytes)", reason="empty")
        target = path
    try:
        return sf.SoundFile(target)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError) as e:
        raise AudioDecodeError(f"cannot decode audio {_describe(source)}: {e}") from e


def audio_info(source: AudioSource) -> AudioInfo:
    """Reads only the header of `source`."""
    with open_audio(source) as f:
        return AudioInfo(
            sample_rate=int(f.samplerate),
            num_channels=int(f.channels),
            num_samples=int(f.frames),
            subtype=f.subtype,
            format=f.format,
        )


def decode_audio(source: AudioSource, *, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Decodes audio to float32 in [-1, 1] (for integer PCM).

    Args:
      source: a file path or the encoded bytes (e.g. a FLAC record payload).
      start: first frame to decode; seeking avoids decoding the whole file for a crop.
      stop: one past the last frame to decode (None = end of file).

    Returns:
      (audio `[num_samples, channels]` float32, sample_rate).

    Raises:
      AudioDecodeError: unreadable data, or no samples at all in the file.
    """
    with open_audio(source) as f:
        sample_rate = int(f.samplerate)
        if f.frames == 0:
            raise AudioDecodeError(f"audio {_describe(source)} has no samples", reason="empty")
        try:
            if start > 0:
                f.seek(start)
            frames = -1 if stop is None else max(0, stop - start)
            audio = f.read(frames, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            raise AudioDecodeError(f"cannot decode audio {_describe(source)}: {e}") from e
    return np.ascontiguousarray(audio), sample_rate


def resampled_length(num_samples: int, sample_rate_in: int, sample_rate_out: int) -> int:
    """Number of samples `resample` returns: round-half-up of `num_samples * out / in` (soxr's rule)."""
    return (2 * num_samples * sample_rate_out + sample_rate_in) // (2 * sample_rate_in)


def resample(audio: np.ndarray, sample_rate_in: int, sample_rate_out: int) -> np.ndarray:
    """Resamples `[num_samples, channels]` float32 audio with soxr (HQ).

    Returns `[resampled_length(num_samples, in, out), channels]` float32. No-op when the rates match.
    """
    if sample_rate_in == sample_rate_out:
        return audio
    if audio.shape[0] == 0:
        return np.zeros((0, audio.shape[1]), np.float32)
    out = soxr.resample(audio, sample_rate_in, sample_rate_out, quality="HQ")
    return np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[1])


def decode_region_resampled(
    source: AudioSource, info: AudioInfo, sample_rate: int, start: int, stop: int
) -> np.ndarray:
    """Decodes target-rate samples `[start, stop)` of a file without decoding all of it.

    Decodes only the source frames around the region plus a margin, so the soxr filter sees the
    same neighbourhood as when the whole file is resampled (agrees to ~1e-6 with
    `resample(decode_audio(source))[start:stop]`). The source window begins on a frame whose
    target-rate position is an integer, which keeps the two sample grids aligned.

    Args:
      source: encoded audio (path or bytes).
      info: its header, from `audio_info` or stored record metadata.
      sample_rate: the target rate.
      start, stop: the region in target-rate samples.

    Returns:
      `[n, channels]` float32 with `n <= stop - start` (shorter only at the end of the file).
    """
    sr_in = info.sample_rate
    if sr_in == sample_rate:
        audio, _ = decode_audio(source, start=start, stop=stop)
        return audio
    # Source frames per target-grid-aligned step: multiples of `step` map to integer target samples.
    step = sr_in // math.gcd(sr_in, sample_rate)
    margin = 1024 * max(1, math.ceil(sr_in / sample_rate))  # a few soxr HQ filter lengths
    lo = max(0, (start * sr_in // sample_rate) - margin)
    lo = (lo // step) * step
    hi = min(info.num_samples, -(-stop * sr_in // sample_rate) + margin)
    audio, _ = decode_audio(source, start=lo, stop=hi)
    out = resample(audio, sr_in, sample_rate)
    offset = lo * sample_rate // sr_in  # exact: lo is a multiple of `step`
    return out[start - offset : stop - offset]


def decode_stereo(source: AudioSource, sample_rate: int) -> np.ndarray:
    """A whole file at `sample_rate`, made stereo (`to_stereo`): `[num_samples, 2]` float32."""
    audio, rate = decode_audio(source)
    return to_stereo(resample(audio, rate, sample_rate))


def peak_normalise(audio: np.ndarray, dbfs: float = -1.0) -> np.ndarray:
    """`audio` scaled so that its largest absolute sample is `dbfs` (digital silence is kept)."""
    audio = np.asarray(audio, np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * np.float32(10 ** (dbfs / 20) / peak) if peak > 0 else audio


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """`[num_samples, channels]` -> `[num_samples, 2]`: mono is duplicated, extra channels are dropped."""
    channels = audio.shape[1]
    if channels == 2:
        return audio
    if channels == 1:
        return np.repeat(audio, 2, axis=1)
    if channels == 0:
        raise AudioDecodeError("audio has no channels", reason="empty")
    return np.ascontiguousarray(audio[:, :2])


def flac_subtype_for(source_subtype: str | None) -> str:
    """FLAC subtype that stores `source_subtype` without loss: PCM_16 for <=16-bit sources, else PCM_24."""
    return "PCM_16" if source_subtype in _SIXTEEN_BIT_OR_LESS else "PCM_24"


class FlacEncoder:
    """Incremental in-memory FLAC encoder, so long files can be converted block by block.

    Usage: `enc = FlacEncoder(sr, channels, subtype); enc.write(block); data = enc.finish()`.
    """

    def __init__(self, sample_rate: int, num_channels: int, subtype: str = "PCM_24"):
        self._buffer = io.BytesIO()
        self._file = sf.SoundFile(
            self._buffer, "w", samplerate=sample_rate, channels=num_channels, format="FLAC", subtype=subtype
        )

    def write(self, block: np.ndarray) -> None:
        """Appends a `[n, channels]` float block; values are clipped to [-1, 1] (FLAC is integer PCM)."""
        self._file.write(np.clip(block, -1.0, 1.0))

    def finish(self) -> bytes:
        self._file.close()
        return self._buffer.getvalue()


def encode_flac(audio: np.ndarray, sample_rate: int, *, subtype: str = "PCM_24") -> bytes:
    """Encodes `[num_samples, channels]` float audio to FLAC bytes (see `flac_subtype_for`)."""
    if audio.ndim == 1:
        audio = audio[:, None]
    encoder = FlacEncoder(sample_rate, audio.shape[1], subtype)
    encoder.write(audio)
    return encoder.finish()


def iter_blocks(f: sf.SoundFile, block_frames: int = _BLOCK_FRAMES):
    """Yields `[n, channels]` float32 blocks of an open file, so memory stays bounded."""
    while True:
        block = f.read(block_frames, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            return
        yield block


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16") -> None:
    """Writes `[num_samples, channels]` (or `[num_samples]`) float audio in [-1, 1] to a WAV file."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    sf.write(os.fspath(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
