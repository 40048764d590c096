"""Command line for the catalog index.

    python -m index build LIBRARY --out INDEX     index a library folder
    python -m index info INDEX                    what an index holds
    python -m index search INDEX "calm piano"     text search (the dense baseline)
    python -m index demo [--out DIR]              assemble the demo catalog and index it
    python -m index analyze FILE [--json] [--midi OUT.mid]
                                                  measure key, tempo, chords, melody, ... of a song
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_index

    report = build_index(args.library, args.out, progress=not args.quiet, workers=args.workers,
                         hold_out=args.hold_out, incremental=not args.full, ray=args.ray)
    print(report.to_text())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .store import MusicIndex

    idx = MusicIndex.load(args.index)
    m = idx.manifest
    print(f"Index {idx.root}  (format {m['format_version']}, built {m.get('created', '?')})")
    print(f"  library:  {idx.library_root}")
    report = idx.root / "build_report.json"
    r = json.loads(report.read_text()) if report.is_file() else {}
    text_only = sum(1 for t in idx.tracks if not t.file)
    print(f"  tracks:   {len(idx.tracks)} ({text_only} text-only)")
    held = f"; {len(idx.heldout_playlists)} held out for validation and test" if idx.heldout_playlists else ""
    print(f"  playlists: {len(idx.playlists) + len(idx.heldout_playlists)} "
          f"(from {r.get('playlist_source', 'playlist files')}{held})")
    for name, members in idx.playlists.items():
        print(f"    - {name}: {len(members)} tracks")
    if idx.heldout_playlists:
        print("  held out (nothing in the index is learned from them):")
        for name, held in idx.heldout_playlists.items():
            print(f"    - {name}: {len(held['tracks'])} tracks ({held['split']})")
    for mod, enc in m["encoders"].items():
        print(f"  {mod:<9} {enc['name']} ({enc['dim']}-d), codebook {m['codebook_sizes'][mod]} codes, faiss {m['faiss'][mod]}")
    if "codebook_fit_tracks" in m:
        from .incremental import refit_limit

        fitted = int(m["codebook_fit_tracks"])
        print(f"  codebooks fitted on {fitted} tracks; a rebuild refits them past {refit_limit(fitted)}")
    if r:
        print(f"  build:    {r['seconds']:.1f}s, {len(r['skipped'])} skipped file(s), "
              f"{len(r.get('text_only', []))} indexed from text only")
    return 0


def hold_out_shares(text: str) -> dict[str, float]:
    """``--hold-out`` as given: "VAL,TEST" shares, or "0" for none."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if values == [0.0]:
        return {}
    if len(values) != 2 or not all(0.0 <= v < 1.0 for v in values) or sum(values) >= 1.0:
        raise argparse.ArgumentTypeError(f"expected VAL,TEST shares such as 0.1,0.15 (or 0 for none), got {text!r}")
    return {"val": values[0], "test": values[1]}


def cmd_search(args: argparse.Namespace) -> int:
    from .store import MusicIndex

    idx = MusicIndex.load(args.index)
    for rank, (tid, score) in enumerate(idx.search_text(args.query, k=args.k), 1):
        t = idx.by_id[tid]
        tags = ", ".join(t.tags[:6])
        print(f"{rank:>2}. {score:.3f}  {t.display_name}  [{t.album}]  {tags}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import build_demo_index

    build_demo_index(args.out, progress=not args.quiet)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze, melody_midi

    result = analyze(args.file, max_seconds=args.max_minutes * 60)
    print(result.to_json() if args.json else result.to_text())
    if args.midi:
        if not result.melody_notes:
            print(f"no melody notes were found in {result.file}, so {args.midi} was not written", file=sys.stderr)
            return 1
        written = melody_midi(result.melody_notes, args.midi, tempo_bpm=result.tempo_bpm)
        print(f"wrote the melody ({len(result.melody_notes)} notes) to {written}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index", description="Build and query the multimodal music index.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="index a library folder (audio, metadata.jsonl, playlists, lyrics)")
    b.add_argument("library", help="library folder, searched recursively")
    b.add_argument("--out", required=True, help="index directory to write (replaced atomically); when it already "
                   "holds an index of LIBRARY, only new and changed files are processed and removed ones dropped, "
                   "and the codebooks are kept until the catalog grows 25%% past the size they were fitted on")
    b.add_argument("--full", action="store_true", help="rebuild everything, refitting the codebooks (a trained "
                   "model must then be retrained)")
    b.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="compute audio features and text embeddings as tasks on a Ray cluster: its address "
                        "(ray://HOST:10001, HOST:6379) or 'auto' (the cluster this machine is in, else a local one); "
                        "needs pip install ray, and this package installed on every node")
    b.add_argument("--workers", type=int, default=None, help="processes for audio features (default: up to 2)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--hold-out", type=hold_out_shares, default=None, metavar="VAL,TEST",
                   help="shares of playlist entries set aside, whole groups of overlapping playlists at a time, "
                        "for validation and test conversations; nothing in the index is learned from them "
                        "(default 0.1,0.15; 0 = use every playlist, and evaluation on them is then optimistic)")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("info", help="describe an index directory")
    i.add_argument("index")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("search", help="text search over tags and metadata (the dense baseline)")
    s.add_argument("index")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    s.set_defaults(func=cmd_search)

    d = sub.add_parser("demo", help="assemble the demo catalog from free music and index it")
    d.add_argument("--out", default=None, help="demo directory (default: $TONEARM_HOME/demo)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("analyze", help="measure an audio file: key, tempo, chords, loudness, melody, structure")
    a.add_argument("file")
    a.add_argument("--json", action="store_true", help="print JSON instead of text")
    a.add_argument("--max-minutes", type=float, default=10.0, help="analyse at most this much audio (default 10)")
    a.add_argument("--midi", metavar="OUT.mid", help="also write the melody notes as a MIDI file")
    a.set_defaults(func=cmd_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import AudioError
    from .distributed import ClusterError
    from .library import LibraryError
    from .store import IndexLoadError

    try:
        return args.func(args)
    except (LibraryError, IndexLoadError, AudioError, ClusterError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
