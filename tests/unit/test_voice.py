"""Call-out clip selection (kiosk_ui/voice.py), the committed clips, and the JS twin.

None of these tests needs espeak-ng or sox: they check the committed clips and
manifest.  ``python scripts/gen_voice.py --check`` verifies that the clips are
what the generator makes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
from functools import cache
from pathlib import Path

import pytest

from kiosk_ui.voice import (
    CHIME,
    LANGUAGES,
    MAX_NUMBER,
    all_stems,
    callout_clips,
    callout_sequence,
    desk_stems,
    label_stems,
    number_stems,
)

REPO = Path(__file__).resolve().parents[2]
VOICE_DIR = REPO / "kiosk_ui" / "static" / "voice"
CALLOUT_JS = REPO / "kiosk_ui" / "static" / "js" / "callout.js"


@cache
def manifest() -> dict:  # type: ignore[type-arg]
    return json.loads((VOICE_DIR / "manifest.json").read_text("utf-8"))


@cache
def clip_files() -> frozenset[str]:
    return frozenset(p.relative_to(VOICE_DIR).as_posix() for p in VOICE_DIR.rglob("*.ogg"))


def gen_voice():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_voice", REPO / "scripts" / "gen_voice.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ogg_samples(path: Path) -> int:
    """Granule position of the last Ogg page = PCM samples in a Vorbis stream."""
    data = path.read_bytes()
    last = data.rfind(b"OggS")
    assert last >= 0, path
    (granule,) = struct.unpack_from("<q", data, last + 6)
    return int(granule)


# --- numbers ---------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_number_up_to_9999_has_clips(lang: str) -> None:
    files = clip_files()
    for n in range(MAX_NUMBER + 1):
        for stem in number_stems(n):
            assert f"{lang}/{stem}.ogg" in files, (lang, n, stem)


def test_number_composition() -> None:
    assert number_stems(0) == ["n0"]
    assert number_stems(17) == ["n17"]
    assert number_stems(99) == ["n99"]
    assert number_stems(100) == ["h1"]
    assert number_stems(117) == ["h1", "n17"]
    assert number_stems(200) == ["h2"]
    assert number_stems(1000) == ["k1"]
    assert number_stems(1017) == ["k1", "n17"]
    assert number_stems(2005) == ["k2", "n5"]
    assert number_stems(9999) == ["k9", "h9", "n99"]
    with pytest.raises(ValueError):
        number_stems(10000)
    with pytest.raises(ValueError):
        number_stems(-1)


def test_hindi_117_speaks_ek_sau_satrah() -> None:
    clips = manifest()["languages"]["hi"]["clips"]
    words = [clips[p.split("/")[1].removesuffix(".ogg")]["text"] for p in callout_clips("hi", "117", "1")]
    assert words == ["टोकन नंबर", "एक सौ", "सत्रह", "डेस्क", "एक", "पर आइए"]
    gu = manifest()["languages"]["gu"]["clips"]
    assert [gu[s]["text"] for s in number_stems(217)] == ["બસો", "સત્તર"]


@pytest.mark.parametrize(
    ("lang", "n", "word"),
    [
        ("hi", 17, "सत्रह"),
        ("hi", 29, "उनतीस"),
        ("hi", 45, "पैंतालीस"),
        ("hi", 99, "निन्यानवे"),
        ("hi", 0, "शून्य"),
        ("hi", 39, "उनतालीस"),
        ("hi", 49, "उनचास"),
        ("hi", 79, "उन्यासी"),
        ("gu", 17, "સત્તર"),
        ("gu", 29, "ઓગણત્રીસ"),
        ("gu", 45, "પિસ્તાળીસ"),
        ("gu", 99, "નવ્વાણું"),
        ("gu", 16, "સોળ"),
        ("gu", 90, "નેવું"),
        ("en", 17, "seventeen"),
        ("en", 45, "forty five"),
        ("en", 99, "ninety nine"),
    ],
)
def test_number_words(lang: str, n: int, word: str) -> None:
    assert callout_clips(lang, str(n), "1")[1] == f"{lang}/n{n}.ogg"
    assert manifest()["languages"][lang]["clips"][f"n{n}"]["text"] == word


def test_number_words_are_distinct_and_in_script() -> None:
    scripts = {"hi": (0x0900, 0x097F), "gu": (0x0A80, 0x0AFF)}
    for lang, (lo, hi) in scripts.items():
        clips = manifest()["languages"][lang]["clips"]
        words = [clips[f"n{i}"]["text"] for i in range(100)]
        assert len(set(words)) == 100, lang
        for word in words:
            assert all(lo <= ord(ch) <= hi for ch in word), (lang, word)


# --- labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "stems"),
    [
        ("A17", ["letter_a", "n17"]),
        ("OPD-17", ["letter_o", "letter_p", "letter_d", "n17"]),
        ("17", ["n17"]),
        ("a17", ["letter_a", "n17"]),
        ("A007", ["letter_a", "n7"]),
        ("A 117", ["letter_a", "h1", "n17"]),
        ("B2005", ["letter_b", "k2", "n5"]),
        ("0", ["n0"]),
        ("12345", ["n1", "n2", "n3", "n4", "n5"]),
        ("AB-12C", ["letter_a", "letter_b", "n12", "letter_c"]),
        ("", []),
        ("टोकन 5", ["n5"]),
    ],
)
def test_label_stems(label: str, stems: list[str]) -> None:
    assert label_stems(label) == stems


@pytest.mark.parametrize(
    ("desk", "stems"),
    [
        ("3", ["n3"]),
        ("D3", ["n3"]),
        ("d-3", ["n3"]),
        ("Desk 3", ["n3"]),
        ("DESK3", ["n3"]),
        ("desk #12", ["n12"]),
        ("Desk B", ["letter_b"]),
        ("D", ["letter_d"]),
        ("12A", ["n12", "letter_a"]),
        ("R2", ["letter_r", "n2"]),
    ],
)
def test_desk_stems(desk: str, stems: list[str]) -> None:
    assert desk_stems(desk) == stems


def test_callout_clips_hindi() -> None:
    assert callout_clips("hi", "A17", "3") == [
        "hi/token.ogg",
        "hi/letter_a.ogg",
        "hi/n17.ogg",
        "hi/desk.ogg",
        "hi/n3.ogg",
        "hi/come.ogg",
    ]
    assert callout_clips("en", "A17", "Desk 3") == [
        "en/token.ogg",
        "en/letter_a.ogg",
        "en/n17.ogg",
        "en/desk.ogg",
        "en/n3.ogg",
    ]
    with pytest.raises(ValueError):
        callout_clips("ta", "A17", "3")


def test_callout_sequence_order() -> None:
    seq = callout_sequence(["gu", "ta", "en"], "A17", "3")
    assert seq[0] == CHIME
    assert seq[1:] == callout_clips("gu", "A17", "3") + callout_clips("en", "A17", "3")
    assert callout_sequence([], "A17", "3") == [CHIME]


# --- committed clips ------------------------------------------------------------


def test_manifest_matches_files() -> None:
    m = manifest()
    listed = {m["chime"]["path"]}
    for lang in LANGUAGES:
        clips = m["languages"][lang]["clips"]
        assert sorted(clips) == sorted(all_stems(lang)), lang
        listed |= {f"{lang}/{stem}.ogg" for stem in clips}
    assert listed == clip_files()
    others = {p.relative_to(VOICE_DIR).as_posix() for p in VOICE_DIR.rglob("*") if p.is_file()} - listed
    assert others == {"manifest.json"}


def test_manifest_texts_match_generator_data() -> None:
    gen = gen_voice()
    for lang in LANGUAGES:
        clips = manifest()["languages"][lang]["clips"]
        assert {stem: c["text"] for stem, c in clips.items()} == gen.texts(lang), lang


def test_clips_are_vorbis_with_the_listed_durations() -> None:
    m = manifest()
    rate = m["format"]["sample_rate"]
    entries = [(m["chime"]["path"], m["chime"]["ms"])] + [
        (f"{lang}/{stem}.ogg", clip["ms"])
        for lang in LANGUAGES
        for stem, clip in m["languages"][lang]["clips"].items()
    ]
    for path, ms in entries:
        data = (VOICE_DIR / path).read_bytes()
        assert data[:4] == b"OggS" and b"\x01vorbis" in data[:64], path
        assert abs(ogg_samples(VOICE_DIR / path) * 1000 / rate - ms) <= 2, path
        assert 150 <= ms <= 2500, (path, ms)


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in VOICE_DIR.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024


def test_sample_sentences_are_a_sensible_length() -> None:
    m = manifest()

    def ms(path: str) -> int:
        if path == CHIME:
            return int(m["chime"]["ms"])
        lang, name = path.split("/")
        return int(m["languages"][lang]["clips"][name.removesuffix(".ogg")]["ms"])

    for lang in LANGUAGES:
        spoken = sum(ms(p) for p in callout_clips(lang, "A17", "3"))
        assert 2000 <= spoken <= 6000, (lang, spoken)


# --- the browser's copy of the logic --------------------------------------------

AGREEMENT_CASES = [
    (langs, label, desk)
    for langs in (["hi", "gu", "en"], ["en"], ["gu", "ta", "hi"], [])
    for label, desk in [
        ("A17", "3"),
        ("OPD-17", "Desk 12"),
        ("17", "D3"),
        ("a007", "d-4"),
        ("B2005", "DESK 9"),
        ("C9999", "desk #10"),
        ("X100", "Desk B"),
        ("Z1000", "D"),
        ("123456", "12A"),
        ("", ""),
        ("AB-12C", "R2"),
        ("टोकन 5", "Desk\u00a07"),
        ("0", "0"),
        ("OPD 0100", "Deskop 3"),
        ("00000017", ". D 5"),
        ("K110", "desk-"),
    ]
]


def test_callout_js_agrees_with_python() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Debian package nodejs)")
    script = (
        "const c = require(process.argv[1]);"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(cases.map(([l, t, d]) => c.sequence(l, t, d))));"
    )
    out = subprocess.run(
        [node, "-e", script, str(CALLOUT_JS)],
        input=json.dumps(AGREEMENT_CASES),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    js = json.loads(out)
    for (langs, label, desk), js_seq in zip(AGREEMENT_CASES, js, strict=True):
        assert js_seq == callout_sequence(langs, label, desk), (langs, label, desk)
