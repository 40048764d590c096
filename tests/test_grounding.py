"""The claim guard: while a reply is written, no title, artist, number or key that is not on screen."""
from __future__ import annotations

from assistant.grounding import ClaimGuard, names_of, sentences
from index.track import Track

REEL = Track(id="r", title="Reel No. 12", artist="Traditional", album="Ryan's Mammoth Collection", year="1883",
             descriptors={"tempo_bpm": 172.4, "key": "D major"})
SLOW = Track(id="s", title="Sonata in C minor", artist="Ludwig van Beethoven",
             descriptors={"tempo_bpm": 66.0, "key": "C minor"})


def guard() -> ClaimGuard:
    return ClaimGuard.for_tracks(REEL, reference=SLOW, shown=[REEL])


def test_a_number_must_be_the_tracks_while_it_is_written_and_when_it_ends():
    g = guard()
    assert g.allows('Here is "Reel No. 12" at about 1') and g.allows("It runs at about 17")
    assert g.allows("It runs at about 172") and g.allows("It runs at about 172 BPM.")
    assert g.allows("It runs at about 170 BPM.")  # within 2 BPM of the measured 172
    assert not g.allows("It runs at about 16")  # no allowed number starts so
    assert not g.allows("It runs at about 17 BPM")  # a start of 172, but it ended there
    assert g.allows("It was written in 1883.") and not g.allows("It was written in 1884.")
    assert not g.allows("It runs at about 2")  # no allowed number starts with a 2
    # after "the", the year's decade: "the 188" may go on to "the 1880s", "the 1883" goes nowhere
    assert g.allows("A reel from the 188") and g.allows("A reel from the 1880") and g.allows("A reel from the 1880s.")
    assert not g.allows("A reel from the 1883") and not g.allows("A reel from the 1880 ")


def test_numbers_in_names_and_titles_being_copied_are_names():
    g = guard()
    assert g.allows('Here is "Reel No. 12", a reel.')  # 12 is the title's
    assert not g.allows("It is number 12 of them.")  # outside the name it is a claim
    assert g.allows('It is Reel No. 1') and not g.allows('It is Reel No. 3')  # a name being copied, unquoted


def test_quoted_titles_and_artists_must_be_on_screen_as_they_are_written():
    g = guard()
    assert g.allows('Try "') and g.allows('Try "Reel No. 1') and g.allows('Try "Sonata in C')
    assert not g.allows('Try "Sonata No. 9') and not g.allows('Try "Reel No. 12 and more", a reel.')
    assert g.allows('Try "Reel ') and not g.allows('Try "Re  ')  # spaces must be the title's too
    assert not g.allows('Try "Reel  No') and not g.allows('Try "REEL No')  # and so must its case
    assert g.allows('Try "Reel No. 12" by Tradi') and g.allows('Try "Reel No. 12" by Traditional from Ryan')
    assert not g.allows('Try "Reel No. 12" by Irving')
    assert not g.allows("It is by Ludwig")  # another track's artist, that track not named
    assert g.allows('Unlike "Sonata in C minor" by Ludwig')  # named


def test_a_key_is_judged_once_its_pitch_or_mode_is_written():
    g = guard()
    assert g.allows("It is in D major.") and g.allows("It is in D")
    assert not g.allows("It is in C") and not g.allows("It is in D minor")
    assert not g.allows("A reel, E major")
    assert g.allows("A minor-key piece? No.") and g.allows("It is a minor")  # the article, not the key
    assert g.allows('Like "Sonata in C minor", it is slower.')  # a name on screen


def test_the_track_before_lends_its_facts_only_to_a_comparison():
    g = guard()
    assert not g.allows("It runs at 66 BPM.")
    assert g.allows("It is faster than the last one (172 vs 66 BPM).")
    assert g.allows("It's faster than the last one: about 172 BPM against 66.")
    dated = ClaimGuard.for_tracks(REEL, reference=Track(id="d", title="Dated", year="2012",
                                                        descriptors={"tempo_bpm": 66.0}), shown=[REEL])
    assert not dated.allows("It's faster than the last one: about 172 BPM against 20")  # the year, as a tempo
    assert dated.allows("It's faster than the last one: about 172 BPM against 6")
    assert g.allows('"Sonata in C minor" was at 66 BPM, in C minor; this one is in D major.')
    assert not g.allows("It is in C minor.")
    same_artist = ClaimGuard.for_tracks(REEL, reference=Track(id="t", title="Tivoli", artist="Traditional",
                                                              descriptors={"tempo_bpm": 90.0}))
    assert not same_artist.allows("A reel by Traditional at about 90 BPM.")  # an artist both share compares nothing


def test_only_the_last_sentence_is_still_being_written():
    g = guard()
    assert sentences("It is fast. It is at about 17") == ["It is fast.", "It is at about 17"]
    assert g.allows("It is fast. It is at about 17") and not g.allows("It is fast. It is at about 16")
    assert g.allows("") and names_of([REEL])[0] == "ryan's mammoth collection"


def test_a_track_without_measurements_allows_no_number_claims():
    bare = ClaimGuard.for_tracks(Track(id="x", title="Untitled"))
    assert not bare.allows("It runs at about 120 BPM.") and bare.allows("It is a calm piece.")


def test_a_reply_may_end_only_after_a_finished_sentence():
    assert ClaimGuard.may_end("") and ClaimGuard.may_end("It is a reel.") and ClaimGuard.may_end('Try "Reel No. 12"!')
    assert not ClaimGuard.may_end("It runs at about") and not ClaimGuard.may_end('Try "Reel')
    assert not ClaimGuard.may_end("It is a reel. It runs at")


def test_a_sentence_that_names_another_card_is_held_to_that_cards_facts():
    waltz = Track(id="w", title="Waltz of the Hours", artist="Léo Delibes", year="1870",
                  descriptors={"tempo_bpm": 98.0, "key": "A major"})
    g = ClaimGuard.for_tracks(REEL, shown=[REEL, waltz])
    assert g.allows('Then "Waltz of the Hours" by Léo Delibes, in A major at about 98 BPM.')
    assert not g.allows('Then "Waltz of the Hours" at about 172')  # the first card's tempo, not the waltz's
    assert not g.allows('Then "Waltz of the Hours" by Tradi')  # nor its artist
    assert not g.allows('Then "Waltz of the Hours" in D major')
    assert g.allows("It runs at about 172 BPM, by Traditional.")  # no card named: the first card


def test_a_word_twice_in_a_row_is_refused_outside_a_name():
    g = ClaimGuard.for_tracks(Track(id="b", title="Bye Bye Blackbird", artist="Ray Henderson", year="1926"))
    assert not g.allows("A song from the 1920s 1920s") and g.allows("A song from 1926, a calm one.")
    assert not g.allows("A traditional piece at about ё ё")  # a one-letter loop too
    assert g.allows("It is Bye Bye") and g.allows("It is Bye Bye Blackbird, from 1926.")  # the title's own
    # Each "C" could begin the name on screen ("Carl Ring"), but the repeat lies before it.
    g = ClaimGuard.for_tracks(Track(id="k", title="Keep", artist="Carl Ring", descriptors={"key": "C minor"}))
    assert g.allows("A dark forest in C") and g.allows("A dark forest, by C")
    assert not g.allows("A dark forest in C C") and not g.allows("A dark forest in Carl Carl")


def test_a_word_twice_in_one_list_is_refused():
    g = ClaimGuard.for_tracks(Track(id="e", title="Apex", artist="Maxstack", tags=["electronic"],
                                    descriptors={"key": "A minor"}))
    assert g.allows("Try it: an electronic, minor-key piece.")
    assert not g.allows("Try it: an electronic, minor-key, electronic")  # refused as the word ends
    assert g.allows("Try it: an electronic, minor-key, elect")  # not yet a repeat


def test_an_artist_written_in_lower_case_is_held_to_as_well():
    g = ClaimGuard.for_tracks(Track(id="b", title="Battle Theme", artist="remaxim"))
    assert g.allows('Here\'s "Battle Theme" by rem') and g.allows('Here\'s "Battle Theme" by remaxim, a piece.')
    assert not g.allows('Here\'s "Battle Theme" by rep') and not g.allows('Here\'s "Battle Theme" by remaxims')
    assert g.allows("It's by the same artist.")  # not the start of this artist's name
    assert g.completion('Here\'s "Battle Theme" by rem') == "axim"


def test_a_phrase_written_again_at_once_is_refused():
    g = ClaimGuard.for_tracks(Track(id="e", title="Apex", artist="Maxstack"))
    assert g.allows("It's closer to the first one than to the last one.")
    assert not g.allows("It's closer to the first one than to the last one than to the last one")
    assert g.allows("It's closer to the first one than to the last one than to the")  # not yet whole
    assert g.allows("It is one of the best, one of the few.")  # words again, but not at once
    assert g.allows("It has vocals. It has") and not g.allows("It has vocals. It has vocals")  # a sentence again
    assert g.allows("It has vocals. It has drums.")


def test_four_words_said_twice_in_one_sentence_are_a_loop():
    g = ClaimGuard.for_tracks(Track(id="e", title="Apex", artist="Maxstack"))
    loop = "It's faster than the last one: than the first one: than the last one"
    assert g.allows(loop[: -len(" one")]) and g.allows(loop[:-1])  # "than the last o" is not yet a repeat
    assert not g.allows(loop + ":") and not g.allows(loop + " ")
    assert g.allows("It's faster than the last one, and closer to the first one than to the last.")
    fast = ClaimGuard.for_tracks(Track(id="m", title="Media Threat", artist="Maxstack",
                                       descriptors={"tempo_bpm": 199.0}))
    assert fast.allows("It's calmer than the last one: about 199 BPLAKING than the first one: about 199")
    assert not fast.allows("It's calmer than the last one: about 199 BPLAKING than the first one: about 199 BPLAKING ")
    # names are taken out first: an artist said twice is not a loop of words
    assert g.allows('Here\'s "Apex" by Maxstack, like the last one by Maxstack.')


def test_a_title_quoted_twice_in_one_sentence_is_a_loop():
    hymn = Track(id="h", title="Lift Every Voice and Sing", artist="J. Rosamond Johnson")
    g = ClaimGuard.for_tracks(hymn, shown=[hymn, REEL])
    assert g.allows('Here\'s "Lift Every Voice and Sing" by J. Rosamond Johnson.')
    assert not g.allows('Here\'s "Lift Every Voice and Sing","L')  # the loop the model fell into
    assert g.allows('Here\'s "Lift Every Voice and Sing", like "Reel No. 12"')  # another card's title
    assert g.allows('Here\'s "Lift Every Voice and Sing". Like "Lift Every Voice and Sing"')  # another sentence
    # the only way on inside the quote was the title said already: nothing is offered
    alone, again = ClaimGuard.for_tracks(hymn, shown=[hymn]), 'Here\'s "Lift Every Voice and Sing","'
    assert not alone.allows(again) and alone.completion(again) is None


def test_an_artist_left_inside_its_first_word_is_refused():
    g = ClaimGuard.for_tracks(Track(id="b", title="Battle Theme", artist="remaxim"))
    assert g.allows('Here\'s "Battle Theme" by r') and g.allows('Here\'s "Battle Theme" by remaxim (')
    assert not g.allows('Here\'s "Battle Theme" by re (') and not g.allows('Here\'s "Battle Theme" by re: "')
    assert not g.allows('How about "Battle Theme" by R')  # the name in its own case, as a title is
    assert not g.allows('Here\'s "Battle Theme" by R (') and not g.allows('How about "Battle Theme" by R ?"')
    g = ClaimGuard.for_tracks(Track(id="z", title="Revelation", artist="Joseph G. Toscano (Zhaytee)"))
    assert g.allows("Try it, by Joseph G. Toscano (Zh") and not g.allows("Try it, by Jos. ")


def test_a_title_begun_in_quotes_is_completed_from_the_titles_on_screen():
    waltz = Track(id="w", title="Waltz of the Hours", artist="Léo Delibes")
    g = ClaimGuard.for_tracks(REEL, reference=SLOW, shown=[REEL, waltz])
    assert g.completion('Here is "Re') == 'el No. 12"'
    assert g.completion('Then "W') == 'altz of the Hours"'  # the second card's
    assert g.completion('After "Sonata') == ' in C minor"'  # the track played before
    assert g.completion('Here is "Reel No. 12') == '"'  # only the closing quote is left
    assert g.completion('Here is "') == '"Reel No. 12"'[1:]  # an empty quote: the first card's title
    assert g.completion('Here is "re') is None  # a title is quoted in its own case
    assert g.completion('Here is "Reel No. 12", a reel.') is None  # no quote open
    assert g.completion("Here is a reel") is None
    assert g.completion('Here is "Polka') is None  # nothing on screen goes on from it
    assert g.allows('Here is "Reel ') and not g.allows('Here is "Reel \xa0')  # a title's spaces are its own
    assert g.completion('Here is "Reel ') == 'No. 12"' and g.completion('Here is "Reel \xa0') is None


def test_an_artist_begun_after_by_is_written_to_its_end():
    zhaytee = Track(id="z", title="Revelation", artist="Joseph G. Toscano (Zhaytee)", year="2004")
    g = ClaimGuard.for_tracks(zhaytee, shown=[zhaytee, Track(id="s", title="Stars", artist="Someone Else")])
    assert g.allows('Try "S')  # a title on screen begins so
    assert g.allows('Try "Revelation" by Joseph G.') and g.allows('Try "Revelation" by Joseph G. Toscano')
    assert g.allows('Try "Revelation" by Joseph G. Toscano (Zhaytee), from 2004.')
    assert not g.allows('Try "Revelation" by Joseph G."S')  # half the name, then something else
    assert not g.allows('"Revelation" by Joseph G\n"Revelation"')
    assert not g.allows('Try "Revelation" by Joseph G (Zhaytee)')
    assert g.allows("A piece driven by strings, from 2004.")  # "by" before no artist
    assert not g.allows('Try "Revelation" byMaxstack')  # "by" glued to a name is still "by"
    beatles = ClaimGuard.for_tracks(Track(id="b", title="Help", artist="The Beatles"))
    assert beatles.allows("Another one by the same band.") and not beatles.allows("A song by The Beat, from 1965.")
    assert g.completion('Try "Revelation" by Joseph G.') == " Toscano (Zhaytee)"
    assert g.completion('Try "Revelation" by Jo') == "seph G. Toscano (Zhaytee)"
    assert g.completion('Try "Revelation" by Joseph G. Toscano (Zhaytee)') is None  # written whole
    assert g.completion("A piece driven by str") is None


def test_at_about_goes_on_to_the_cards_tempo_or_is_not_written():
    g = ClaimGuard.for_tracks(REEL, reference=SLOW, shown=[REEL])
    assert g.completion("It's a reel at about") == " 172 BPM"
    assert g.completion("It's a reel at about ") == "172 BPM"
    assert g.completion('"Sonata in C minor" is slower, at about') == " 66 BPM"  # the track it names
    assert g.completion("It's a reel at") is None
    # the card's year is one of its numbers, but never its tempo
    assert g.allows("It's a reel at about 1") and not g.allows("It's a reel at about 18")
    assert not g.allows("It's a reel at about 1883.") and g.allows("It's a reel from 1883, at about 172 BPM.")
    untimed = ClaimGuard.for_tracks(Track(id="u", title="Untimed", artist="Nobody"))
    assert not untimed.allows("It's a calm piece at about") and untimed.allows("It's a calm piece at")
    assert untimed.completion("It's a calm piece at about") is None


def test_a_small_word_glued_to_a_capital_is_refused_outside_a_name():
    quartet = Track(id="q", title="String Quartet No. 1", artist="Robert Schumann", album="String Quartets")
    g = ClaimGuard.for_tracks(quartet)
    assert not g.allows('How about "String Quartet No. 1" by Robert Schumann fromString')
    assert g.allows('How about "String Quartet No. 1" by Robert Schumann from String')
    sessions = Track(id="i", title="Night", artist="Someone", album="inSomnia Sessions")
    assert ClaimGuard.for_tracks(sessions).allows("It is from inSomnia Sessions, a calm one.")  # a name's own spelling


def test_from_and_a_capital_names_the_cards_album_as_it_is_written():
    movement = Track(id="m", title="String Quartet No. 1 in A minor, Op. 41 No. 1: movement 2", artist="Robert Schumann",
                     album="String Quartet No. 1 in A minor, Op. 41 No. 1", year="1842",
                     descriptors={"tempo_bpm": 66.0, "key": "G major"})
    other = Track(id="o", title="Lucid Dream", artist="Martin Strohmeier", album="OpenClonk")
    g = ClaimGuard.for_tracks(movement, shown=[movement, other])
    said = f'Here\'s "{movement.title}" by Robert Schumann from String Quartet No. 1 in '
    assert g.allows(said + "A") and g.allows(said + "A minor, Op. 41 No. 1, a piece in G major.")
    # the card's key and year, true of it, made into an album it is not from
    assert not g.allows(said + "G major") and not g.allows(said + "A minor, Op. 1842")
    assert g.completion(said) == "A minor, Op. 41 No. 1"
    assert g.allows(f'Here\'s "{movement.title}" from Str') and not g.allows(f'Here\'s "{movement.title}" from Str ')
    assert not g.allows(f'Here\'s "{movement.title}" from Str \xa0"')  # a word left, then anything but the album
    assert g.completion(f'Here\'s "{movement.title}" by Robert Schumann from') is None  # nothing begun yet
    assert not g.allows(f'Here\'s "{movement.title}" by Robert Schumann from OpenClonk')  # another card's album
    assert g.allows('Here\'s "Lucid Dream" by Martin Strohmeier from OpenClonk.')  # of the card it names
    assert g.allows("It's a quartet movement from the 1840s, in G major.")  # "from" and no capital: no album

