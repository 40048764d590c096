"""The demo catalog: score facts, tags, playlists, folder writing, and a real tiny render when FluidSynth is here.

Everything runs offline on tiny inputs: scores built in the test or taken from the
music21 corpus, and audio synthesised with numpy. Nothing calls apt.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from index import demo
from index.demo import assembly, common, games, render, works

HAVE_FLUIDSYNTH = shutil.which("fluidsynth") is not None and render.find_soundfont() is not None
needs_fluidsynth = pytest.mark.skipif(not HAVE_FLUIDSYNTH, reason="fluidsynth and a GM soundfont are not installed")


def tone(path: Path, seconds: float, tags: dict | None = None, rate: int = 8000, freq: float = 440.0) -> Path:
    """A tagged Ogg Vorbis sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    common.write_ogg(path, audio, rate)
    if tags:
        common.write_ogg_tags(path, tags)
    return path


def small_score(title="Little Song", composer="Jane Doe", bpm=90):
    """A one-part G major song in 3/4 with a metronome mark and a hyphenated lyric."""
    from music21 import key, meter, metadata, note, stream, tempo

    score = stream.Score()
    score.metadata = metadata.Metadata()
    score.metadata.title = title
    score.metadata.composer = composer
    part = stream.Part()
    part.partName = "Voice"
    part.append(key.KeySignature(1))
    part.append(meter.TimeSignature("3/4"))
    if bpm:
        part.append(tempo.MetronomeMark(number=bpm))
    melody = ["G4", "B4", "D5", "G4", "A4", "B4", "C5", "D5", "B4", "G4", "D4", "G4",
              "F#4", "A4", "D5", "G4", "B4", "G4"]
    syllables = [("Sing", "single"), ("a", "single"), ("song", "single"), ("of", "single"), ("the", "single"),
                 ("morn", "begin"), ("ing", "end"), ("light", "single")]
    for i, pitch in enumerate(melody):
        n = note.Note(pitch, quarterLength=1.0)
        if i < len(syllables):
            n.lyrics.append(note.Lyric(text=syllables[i][0], syllabic=syllables[i][1]))
        part.append(n)
    score.insert(0, part)
    return score


# --------------------------------------------------------------------------- music21 facts


def test_score_facts_reads_title_composer_key_meter_tempo_and_lyrics():
    facts = render.score_facts(small_score())
    assert facts.title == "Little Song"
    assert facts.composer == "Jane Doe"
    assert facts.key == "G major" and facts.mode == "major"
    assert facts.key_signature == "1 sharp"
    assert facts.meter == "3/4" and facts.beat_ql == 1.0
    assert facts.qpm == pytest.approx(90)
    assert facts.lyrics.startswith("Sing a song of the morning light")
    assert facts.part_names == ["Voice"]
    assert facts.quarter_length == pytest.approx(18)


def test_score_facts_take_a_tempo_word_from_plain_text():
    from music21 import expressions

    score = small_score(bpm=None)
    score.parts[0].insert(0, expressions.TextExpression("Andante con moto"))
    facts = render.score_facts(score)
    assert facts.qpm is None
    assert render.tempo_marking_word(facts.tempo_text) == "andante"


def test_choose_bpm_prefers_the_score_then_words_then_the_dance_type():
    rng = random.Random(0)
    collection = next(c for c in works.COLLECTIONS if c.key == "oneills")
    marked = render.ScoreFacts(meter="6/8", beat_ql=1.5, qpm=180.0)
    assert render.choose_bpm(marked, collection, works.WorkRef("x.abc", kind="reel"), rng) == (120.0, "score")
    worded = render.ScoreFacts(meter="6/8", beat_ql=1.5, tempo_text="Allegretto vivace")
    bpm, source = render.choose_bpm(worded, collection, works.WorkRef("x.abc"), rng)
    assert source == "tempo word" and bpm == pytest.approx(works.TEMPO_WORDS["allegretto"] * 0.75)
    reel = render.ScoreFacts(meter="2/2", beat_ql=2.0)
    for _ in range(20):
        bpm, source = render.choose_bpm(reel, collection, works.WorkRef("x.abc", kind="reel"), rng)
        lo, hi, _ = works.DANCE_TEMPI["reel"]
        assert source == "genre" and lo / 2 <= bpm <= hi / 2      # quarter notes -> half-note beats


def test_part_programs_follow_part_names_only_where_the_collection_says_so():
    quartets = next(c for c in works.COLLECTIONS if c.key == "string-quartets")
    names = ["Violin I", "Violin II", "Viola", "Violoncello"]
    assert [tag for _, tag in render.part_programs(names, quartets, (48, "strings"))] == \
        ["violin", "violin", "viola", "cello"]
    songs = next(c for c in works.COLLECTIONS if c.key == "songs")
    assert render.part_programs(["Voice", "Piano"], songs, works.VOICE) == [works.VOICE, works.PIANO]
    assert render.part_programs(["Soprano", "Alto", "Piano"], songs, works.VOICE)[:2] == [works.CHOIR, works.CHOIR]
    chorales = next(c for c in works.COLLECTIONS if c.key == "bach-chorales")
    assert render.part_programs(["Soprano", "Alto", "Tenor", "Bass"], chorales, works.ORGAN) == [works.ORGAN] * 4


def test_work_tags_name_genre_instrument_key_meter_and_vocal_only_when_sung():
    chorales = next(c for c in works.COLLECTIONS if c.key == "bach-chorales")
    facts = render.ScoreFacts(key="A minor", mode="minor", meter="4/4", lyrics="Befiehl du deine Wege")
    sung = render.work_tags(works.WorkRef("bach/bwv161.6.mxl"), chorales, facts, [works.CHOIR] * 4)
    assert {"chorale", "baroque", "choir", "vocal", "A minor", "minor", "4/4 time"} <= set(sung)
    played = render.work_tags(works.WorkRef("bach/bwv161.6.mxl"), chorales, facts, [works.ORGAN] * 4)
    assert "organ" in played and "vocal" not in played and "instrumental" in played
    atonal = render.work_tags(works.WorkRef("x.mxl", tags=("atonal",)), chorales, facts, [works.PIANO])
    assert "A minor" not in atonal


def test_chorale_titles_come_from_the_opening_words_of_the_text():
    chorales = next(c for c in works.COLLECTIONS if c.key == "bach-chorales")
    facts = render.ScoreFacts(lyrics="Weg, mein Herz, mit den Gedanken, als ob du verstossen wärst")
    info = render.work_description(works.WorkRef("bach/bwv25.6.mxl"), chorales, facts)
    assert info["title"] == "Weg, mein Herz (BWV 25.6)"
    assert info["artist"] == "Johann Sebastian Bach"
    untexted = render.work_description(works.WorkRef("bach/bwv116.6.mxl"), chorales, render.ScoreFacts())
    assert untexted["title"] == "Chorale, BWV 116.6"


@pytest.mark.parametrize("raw, clean", [
    ("14. Rex quem Metrorum", "Rex quem Metrorum"),
    ("1. LA GIOVINETTA PIANTA", "La giovinetta pianta"),
    ("madrigal.3.1.mxl", ""),
    ("CANTO", ""),
    (".lV.L\"'!UCl'l.v .J.u,.:;l';'V", ""),
])
def test_clean_title(raw, clean):
    assert common.clean_title(raw) == clean


def test_lyrics_cleaning_joins_syllables_and_drops_garbled_text():
    assert render.clean_score_lyrics("1. Ma doú ve, oh lasú so me") == "Ma dove, oh lasso me"
    assert render.clean_score_lyrics("gio\xadvi\xad net- ta") == "giovinetta"
    assert render.lyrics_look_clean("Aus meinen Tränen sprießen viel blühende Blumen hervor")
    assert not render.lyrics_look_clean("bel-4arnadre de' fiori, d'erbe noveile;_g dino-~- vei-l[gmozi")


# --------------------------------------------------------------------------- ABC and folk-song facts


ABC = """X: 1
T: Flowing Tide, The -- REEL.
C: CONN. HIGGINS.
M: 2/2
K: D
ABcd efge|

X: 7
T: Miss Bruce
R: double jig
M: 6/8
K: G
GAB cde|
"""


def test_abc_tunes_are_listed_without_parsing_the_music():
    tunes = works.abc_tunes(ABC)
    assert [t.number for t in tunes] == [1, 7]
    assert works.split_tune_title(tunes[0].title) == ("The Flowing Tide", "reel")
    assert works.tune_composer(tunes[0].composer) == "Conn. Higgins"
    assert works.tune_composer("") == "Traditional"
    assert works.dance_kind(tunes[1].rhythm) == "jig"
    assert works.dance_kind("slipjig") == "slip jig"


def test_essen_facts_translate_place_and_function():
    assert works.essen_facts("Europa, Mitteleuropa, Deutschland, Schlesien", "Romanze, Ballade, Lied", "altdeu10") == \
        ("Silesia", ["ballad", "romance"])
    place, kinds = works.essen_facts("", "Kinder - Lied", "han1")
    assert place == "China" and kinds == ["children's song"]


# --------------------------------------------------------------------------- Debian game tracks


def test_game_track_meta_uses_embedded_tags_scene_comments_and_the_package():
    openclonk = next(p for p in games.GAME_PACKAGES if p.package == "openclonk-data")
    embedded = {"title": "Island Dreams", "artist": "Martin Strohmeier (K-Pone)", "album": "OpenClonk",
                "genre": "Reggae", "comment": "day;underwater", "date": "2014"}
    meta = games.game_track_meta(openclonk, PurePosixPath("IslandDreams.ogg"), embedded, 197.3)
    assert meta["title"] == "Island Dreams" and meta["year"] == "2014"
    assert {"video game music", "reggae", "daytime", "underwater"} <= set(meta["tags"])
    assert meta["source"] == "debian:openclonk-data"
    assert "Island Dreams by Martin Strohmeier (K-Pone) (2014)" in meta["description"]
    assert "OpenClonk" in meta["description"]


def test_game_track_meta_falls_back_to_file_names_and_credits():
    supertux = next(p for p in games.GAME_PACKAGES if p.package == "supertux-data")
    meta = games.game_track_meta(supertux, PurePosixPath("forest/forest_theme.ogg"), {}, 136.7)
    assert meta["title"] == "Forest Theme" and meta["artist"] == "SuperTux Team"
    assert "forest" in meta["tags"] and meta["year"] == ""
    credited = games.game_track_meta(supertux, PurePosixPath("misc/x.ogg"), {"title": "Living Caves"}, 60.0,
                                    credit=("Palace", "Will Savino"))
    assert (credited["title"], credited["artist"]) == ("Palace", "Will Savino")


def test_read_game_package_skips_jingles_and_makes_world_playlists(tmp_path):
    supertux = next(p for p in games.GAME_PACKAGES if p.package == "supertux-data")
    music = tmp_path / "unpacked" / supertux.music_dir
    tone(music / "forest" / "forest2.ogg", 21, {"title": "Rabbit Holes", "artist": "Wansti", "date": "2006"})
    tone(music / "misc" / "leveldone.ogg", 5, {"title": "Level Done"})
    tracks = games.read_game_package(supertux, tmp_path / "unpacked", tmp_path / "mixes")
    assert len(tracks) == 1                                  # the 5-second jingle is not a track
    track = tracks[0]
    assert track.file == "games/supertux/forest/forest2.ogg"
    assert track.meta["title"] == "Rabbit Holes" and track.meta["year"] == "2006"
    assert track.playlists == ["SuperTux", "SuperTux: Forest"]


def test_fret_on_fire_stems_are_mixed_into_one_tagged_song(tmp_path):
    import mutagen

    muldjord = next(p for p in games.GAME_PACKAGES if p.package == "fretsonfire-songs-muldjord")
    song = tmp_path / "unpacked" / muldjord.music_dir / "chaos_god"
    song.mkdir(parents=True)
    (song / "song.ini").write_text("[song]\nname = Chaos God\nartist = Muldjord - www.muldjord.com\n")
    tone(song / "song.ogg", 21, {"genre": "Death Metal", "date": "2007"}, freq=220)
    tone(song / "guitar.ogg", 21, freq=330)
    [track] = games.read_game_package(muldjord, tmp_path / "unpacked", tmp_path / "mixes")
    assert track.source == tmp_path / "mixes" / muldjord.package / "chaos-god.ogg"
    assert (track.meta["title"], track.meta["artist"], track.meta["year"]) == ("Chaos God", "Muldjord", "2007")
    assert {"metal", "death metal"} <= set(track.meta["tags"])
    tags = mutagen.File(track.source)
    assert tags["title"] == ["Chaos God"] and tags["artist"] == ["Muldjord"]
    assert tags.info.length == pytest.approx(21, abs=0.1)


def test_hyperrogue_credits_name_each_file_after_its_land(tmp_path):
    listing = tmp_path / "usr/share/hyperrogue/hyperrogue-music.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("# Crossroads [02]\n[02] */music/hr3-crossroads.ogg\n# Camelot [20]\n"
                       "[20] */music/hr-savino-palace.ogg\n# Palace [28]\n[28] */music/hr-savino-palace.ogg\n"
                       "Crossroads, Hall of Mirrors by Shawn Parrotte (http://example.org)\n"
                       "Caribbean, Palace by Will Savino (http://example.org)\n")
    credits = games.hyperrogue_credits(tmp_path)
    assert credits["hr3-crossroads.ogg"] == ("Crossroads", "Shawn Parrotte")
    assert credits["hr-savino-palace.ogg"] == ("Palace", "Will Savino")


# --------------------------------------------------------------------------- planning and the folder


def test_allocate_is_proportional_capped_and_complete():
    out = assembly.allocate(100, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1000, "b": 1000, "c": 5})
    assert out["c"] == 5 and sum(out.values()) == 100 and out["a"] > out["b"]
    assert assembly.allocate(10, {"a": 1.0, "b": 1.0}, {"a": 3, "b": 4}) == {"a": 3, "b": 4}
    with pytest.raises(ValueError):
        assembly.allocate(-1, {"a": 1.0}, {"a": 1})


def test_music21_alone_still_reaches_the_minimum_catalog():
    assert assembly.music21_target(0, 150) >= common.MIN_TRACKS
    assert assembly.music21_target(150, 150) == 150
    assert assembly.music21_target(common.MIN_TRACKS + 5, 40) == 40
    assert assembly.allocate(assembly.music21_target(0, 150), {"x": 1.0}, {"x": 10_000})["x"] >= common.MIN_TRACKS


def test_write_m3u_paths_are_relative_to_the_playlist(tmp_path):
    audio = tone(tmp_path / "lib" / "games" / "a b.ogg", 1)
    playlist = tmp_path / "lib" / "playlists" / "mix.m3u"
    common.write_m3u(playlist, "My mix", [(audio, "Someone - A B", 1.0)])
    lines = playlist.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["#EXTM3U", "#PLAYLIST:My mix", "#EXTINF:1,Someone - A B"]
    assert lines[3] == "../games/a b.ogg"
    assert (playlist.parent / lines[3]).resolve() == audio.resolve()
    with pytest.raises(ValueError):
        common.write_m3u(playlist, "empty", [])


def test_playlist_file_names_read_as_the_playlist_name():
    assert assembly.playlist_filename("SuperTux: Forest") == "SuperTux - Forest"
    assert assembly.playlist_filename("O'Neill's Music of Ireland") == "O'Neill's Music of Ireland"
    assert assembly.playlist_filename("a/b") == "a - b"


def _library_tracks(tmp_path: Path, n: int = 6) -> list[common.LibraryTrack]:
    tracks = []
    for i in range(n):
        src = tone(tmp_path / "cache" / f"t{i}.ogg", 1, freq=300 + 50 * i)
        tags = ["folk", "reel"] if i % 2 else ["orchestral"]
        meta = {"id": "same-id" if i < 2 else f"t{i}", "title": f"Tune {i}", "artist": "Band",
                "album": "Album A" if i < 3 else "Album B", "tags": tags, "source": "test", "duration_s": 1.0}
        tracks.append(common.LibraryTrack(src, f"music/t{i}.ogg", meta, ["All tunes"]))
    return tracks


def test_write_library_writes_metadata_and_playlists_then_replaces_itself(tmp_path):
    tracks = _library_tracks(tmp_path)
    playlists = assembly.build_playlists(tracks)
    assert playlists["All tunes"] == list(range(6))
    assert "Album A" in playlists and "Album B" in playlists
    root = tmp_path / "library"
    assembly.write_library(root, tracks, playlists)
    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["file"] for line in lines] == [t.file for t in tracks]
    assert len({line["id"] for line in lines}) == 6                 # a repeated id is made unique
    assert all((root / line["file"]).is_file() for line in lines)
    m3u = (root / "playlists" / "All tunes.m3u").read_text(encoding="utf-8").splitlines()
    assert all((root / "playlists" / p).resolve().is_file() for p in m3u if not p.startswith("#"))
    assembly.write_library(root, tracks[:2], {"Two": [0, 1]})           # a rebuild replaces the old folder whole
    assert len((root / "metadata.jsonl").read_text().splitlines()) == 2
    assert [p.name for p in (root / "playlists").iterdir()] == ["Two.m3u"]
    assert not list(tmp_path.glob(".library.*"))


def test_write_library_refuses_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "music"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo library"):
        assembly.write_library(foreign, _library_tracks(tmp_path, 2), {})
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_genre_mixes_cross_sources_and_drop_duplicates(tmp_path):
    tracks = _library_tracks(tmp_path, 12)
    playlists = assembly.build_playlists(tracks)
    assert sorted(playlists["Orchestral mix"]) == [0, 2, 4, 6, 8, 10]
    assert "Reel mix" not in playlists                  # the same six tracks as the folk mix
    assert sorted(playlists["Folk mix"]) == [1, 3, 5, 7, 9, 11]


def test_score_to_midi_sets_instruments_tempo_and_loops_short_tunes(tmp_path):
    import pretty_midi

    midi = tmp_path / "song.mid"
    render.score_to_midi(small_score(bpm=None), midi, [(71, "clarinet")], qpm=120)
    pm = pretty_midi.PrettyMIDI(str(midi))
    assert [inst.program for inst in pm.instruments] == [71]
    assert pm.get_tempo_changes()[1][0] == pytest.approx(120, abs=0.1)
    one_pass = pm.get_end_time()                           # 18 quarter notes at 120 = 9 s
    assert one_pass == pytest.approx(9.0, abs=0.1)
    looped = render.fit_midi(midi, tmp_path / "fit.mid", seconds=20, loop_seconds=25)
    fitted = pretty_midi.PrettyMIDI(str(tmp_path / "fit.mid"))
    assert looped == pytest.approx(27.0, abs=0.2)          # three passes, the most it plays
    assert max(n.end for n in fitted.instruments[0].notes) <= 20.0
    stops = [c.number for c in fitted.instruments[0].control_changes]
    assert 120 in stops and 123 in stops                   # lets FluidSynth finish the render


def test_render_seconds_below_a_track_are_refused(tmp_path):
    with pytest.raises(ValueError, match="render_seconds"):
        demo.assemble_demo_library(tmp_path / "lib", render_seconds=5)


# --------------------------------------------------------------------------- real renders


TUNES = works.Collection("test-tunes", "Test tunes", 1.0, ("folk", "dance tune"), ((110, "fiddle"),), (100, 120),
                        "a test tune", album="Ryan's Mammoth Collection", loop_seconds=30.0, works=(
                            works.WorkRef("ryansMammoth/7thRegimentReel.abc", 1, title="7th Regiment", kind="reel"),
                            works.WorkRef("ryansMammoth/YoungAmericaHornpipe.abc", 1, title="Young America",
                                         kind="hornpipe"),
                            works.WorkRef("ryansMammoth/AbithaMugginsFavoriteReel.abc", 1,
                                         title="Abitha Muggins' Favorite", kind="reel")))


@needs_fluidsynth
def test_render_work_makes_a_tagged_ogg_and_a_sidecar(tmp_path):
    import mutagen

    ogg = tmp_path / "reel.ogg"
    result = render.render_work(render.RenderJob(TUNES.works[0], TUNES, str(ogg), 25.0, str(render.find_soundfont())))
    assert result["ok"], result
    assert result["title"] == "7th Regiment" and "reel" in result["tags"] and "fiddle" in result["tags"]
    lo, hi, _ = works.DANCE_TEMPI["reel"]
    assert result["tempo_from"] == "genre"
    assert lo <= result["tempo_bpm"] * {"2/4": 1, "2/2": 2, "4/4": 1}[result["meter"]] <= hi
    audio = mutagen.File(ogg)
    assert common.MIN_TRACK_SECONDS <= audio.info.length <= 25.1
    assert audio["title"] == ["7th Regiment"] and audio["bpm"] == [str(round(result["tempo_bpm"]))]
    assert json.loads(ogg.with_suffix(".json").read_text(encoding="utf-8")) == result


@needs_fluidsynth
def test_music21_only_library_when_apt_is_unavailable_and_reuse_on_a_second_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TONEARM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(games, "apt_available", lambda: (False, "apt is not available here (test)."))
    monkeypatch.setattr(assembly, "COLLECTIONS", (TUNES,))
    monkeypatch.setattr(assembly, "RENDER_WORKERS", 1)
    root = tmp_path / "home" / "demo" / "library"
    first = demo.assemble_demo_library(root, progress=False, max_music21=2, render_seconds=25)
    assert "apt is not available here (test)." in first.warnings
    assert first.by_source == {"music21:test-tunes": 3}          # raised past max_music21 towards MIN_TRACKS
    assert first.rendered == 3 and first.reused["renders"] == 0
    lines = (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all((root / json.loads(line)["file"]).is_file() for line in lines)
    assert (root / "playlists" / "Test tunes.m3u").is_file()
    second = demo.assemble_demo_library(root, progress=False, max_music21=2, render_seconds=25)
    assert second.rendered == 0 and second.reused["renders"] == 3
    assert (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines() == lines
