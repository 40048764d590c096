"""Which playlists are held out of the index, so that evaluation on them is honest.

Conversations for validation and test are walks through playlists. If those playlists also
shaped the index (the playlist co-occurrence embedding, its codes, the code descriptions, the
session search, the popularity counts), a system scored on them has been told part of the
answer. So the build sets some playlists aside before anything is learned from playlists,
and records them; the index proper knows only the training playlists.

Playlists that overlap are held out together. Two playlists are *linked* when

- one of them plays two tracks back to back that the other also plays back to back, in the
  same order (a session over one would walk the other's steps), or
- their shared tracks make up at least :data:`SHARED_SHARE` of the longer one (an album
  and the playlist that copies most of it carry the same co-occurrence).

A long mix that merely includes a few tracks of a short album is not linked to it: that is
the ordinary overlap between playlists that co-occurrence learns from. How much of the
held-out playlists' co-occurrence remains in training is measured by
:func:`cooccurrence_overlap` and printed in the build report.

Connected groups of linked playlists are assigned as a whole, so no held-out playlist has a
linked playlist in training.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

HOLDOUT_SPLITS = ("val", "test")
DEFAULT_HOLDOUT = {"val": 0.1, "test": 0.15}
SHARED_SHARE = 0.5


def ordered_pairs(members: Sequence[str]) -> set[tuple[str, str]]:
    """The (a, b) steps of a playlist: b is played right after a (repeats of one track skipped)."""
    out = set()
    for a, b in zip(members, members[1:]):
        if a != b:
            out.add((a, b))
    return out


def linked(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two playlists overlap enough to leak one into the other (see the module docstring)."""
    set_a, set_b = set(a), set(b)
    shared = len(set_a & set_b)
    if shared < 2:
        return False
    if shared >= SHARED_SHARE * max(len(set_a), len(set_b)):
        return True
    return bool(ordered_pairs(a) & ordered_pairs(b))


def playlist_groups(playlists: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Connected groups of linked playlists, each sorted by name, in order of their first name."""
    names = sorted(playlists)
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    # Only playlists that share a track can be linked: compare within each track's playlists.
    by_track: dict[str, list[str]] = {}
    for name in names:
        for tid in set(playlists[name]):
            by_track.setdefault(tid, []).append(name)
    checked: set[tuple[str, str]] = set()
    for sharing in by_track.values():
        for i, a in enumerate(sharing):
            for b in sharing[i + 1:]:
                if (a, b) in checked or root(a) == root(b):
                    continue
                checked.add((a, b))
                if linked(playlists[a], playlists[b]):
                    parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return sorted(groups.values(), key=lambda g: g[0])


def hold_out_playlists(playlists: Mapping[str, Sequence[str]], shares: Mapping[str, float] | None = None,
                       seed: int = 0) -> dict[str, str]:
    """Assign every playlist to "train", "val" or "test", whole linked groups at a time.

    Groups are shuffled with ``seed`` and taken, test first, while at least half of a group
    fits in the split's share of all playlist entries (so long playlists count for more).
    With three or more groups and a positive share, val and test get at least one group each;
    a group holding most of the library stays in training.

    Parameters
    ----------
    playlists : mapping
        Playlist name -> ordered track ids.
    shares : mapping or None
        "val" and "test" -> share of playlist entries to hold out; default :data:`DEFAULT_HOLDOUT`.
        All zero holds nothing out.

    Returns
    -------
    dict
        Playlist name -> split name.
    """
    shares = dict(DEFAULT_HOLDOUT if shares is None else shares)
    unknown = set(shares) - set(HOLDOUT_SPLITS)
    if unknown:
        raise ValueError(f"held-out splits are {HOLDOUT_SPLITS}, not {sorted(unknown)}")
    for name, share in shares.items():
        if not 0.0 <= share < 1.0:
            raise ValueError(f"the {name} share must be in [0, 1), got {share}")
    if sum(shares.values()) >= 1.0:
        raise ValueError(f"held-out shares must leave playlists to train on, got {shares}")
    groups = playlist_groups(playlists)
    random.Random(seed).shuffle(groups)
    size = [sum(len(playlists[n]) for n in g) for g in groups]
    total = sum(size)
    # A group holding most of the library, and the last group, always train.
    movable = [i for i in range(len(groups) - 1) if size[i] <= 0.5 * total]
    split_of = {name: "train" for g in groups for name in g}
    order = [s for s in ("test", "val") if shares.get(s, 0.0) > 0]
    for n, split in enumerate(order):
        share = shares[split]
        taken, count = 0, 0
        later = len(order) - n - 1  # splits still to fill, one group each at least
        while len(movable) > later or (count == 0 and movable):
            i = movable[0]
            must_have_one = count == 0 and len(groups) >= 3
            if not must_have_one and taken + size[i] / 2 > share * total:
                break
            for name in groups[i]:
                split_of[name] = split
            taken, count = taken + size[i], count + 1
            movable.pop(0)
    return split_of


def cooccurrence_overlap(playlists: Mapping[str, Sequence[str]], split_of: Mapping[str, str]) -> dict[str, float]:
    """For each held-out split, the share of its playlists' co-occurring track pairs that some
    training playlist also holds (0 = nothing of it is known in training, 1 = all of it)."""
    def pairs(members: Sequence[str]) -> set[tuple[str, str]]:
        return set(itertools.combinations(sorted(set(members)), 2))

    known: set[tuple[str, str]] = set()
    for name, members in playlists.items():
        if split_of.get(name, "train") == "train":
            known |= pairs(members)
    out = {}
    for split in HOLDOUT_SPLITS:
        held = set().union(*[pairs(m) for n, m in playlists.items() if split_of.get(n) == split])
        if held:
            out[split] = len(held & known) / len(held)
    return out
