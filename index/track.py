"""The track record shared by every part of the project."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Order matters: it is the order of codes in a music block and of columns in the code table.
MODALITIES: tuple[str, ...] = ("playlist", "tags", "metadata", "lyrics", "audio")


@dataclass
class Track:
    """One catalog entry.

    Attributes
    ----------
    id : str
        The id given in ``metadata.jsonl``, else a stable hash of the relative path.
    file : str or None
        Audio path relative to the library root; None for a text-only track.
    tags : list of str
        Human tags (genre, mood, ...) followed by tags derived from the audio.
    descriptors : dict
        Measured audio facts (tempo_bpm, key, mode, energy, brightness, ...); empty without audio.
        ``key`` and ``mode`` are the library's where a tag names a key (``key_source``
        "library", the estimate kept as ``measured_key``), else measured (``key_source`` "audio").
    playlists : list of str
        Names of the playlists the track appears in.
    """

    id: str
    title: str = ""
    artist: str = ""
    album: str = ""
    year: str = ""
    genre: str = ""
    tags: list[str] = field(default_factory=list)
    lyrics: str = ""
    description: str = ""
    file: str | None = None
    duration_s: float | None = None
    descriptors: dict[str, Any] = field(default_factory=dict)
    playlists: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Track":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def display_name(self) -> str:
        return f"{self.title or self.id}" + (f" by {self.artist}" if self.artist else "")
