#!/usr/bin/env python3
"""Render the display board's call-out clips with espeak-ng and sox.

    python scripts/gen_voice.py            # regenerate kiosk_ui/static/voice/
    python scripts/gen_voice.py --check    # regenerate into a temp dir, compare with the committed clips

Needs the Debian packages ``espeak-ng`` and ``sox`` (sox's Ogg/Vorbis writer is in
``libsox-fmt-base``, which ``sox`` depends on).  Output is deterministic for a
given espeak-ng/sox version (``sox -R``).

Every word is written out below as data; espeak-ng's own number reading is
never used, because its Hindi/Gujarati number words are not reliable.  Which
stems exist, and how a call-out is assembled from them, lives in
``kiosk_ui/voice.py`` (and its JavaScript twin ``kiosk_ui/static/js/callout.js``).

Besides the clips, the script writes ``manifest.json`` (languages, stems,
texts, durations in ms), prints a table of assembled call-out durations, and
concatenates one full Hindi call-out into ``test-artifacts/callout_hi.wav`` for
a human to listen to.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiosk_ui.voice import CHIME, CLIP_EXT, LANGUAGES, all_stems, callout_sequence  # noqa: E402

OUT_DIR = REPO / "kiosk_ui" / "static" / "voice"
ARTIFACT_DIR = REPO / "test-artifacts"

SAMPLE_RATE = 16000
VORBIS_QUALITY = 0  # sox -C for Ogg/Vorbis: -1..10; 0 (~64 kbit/s nominal, far less for speech) is clear
SPEED_WPM = 140  # espeak-ng default is 175; slower carries better in a noisy hall
LEAD_PAD_S = 0.02  # silence kept before each word after trimming
TAIL_PAD_S = 0.06  # ... and after it, so words do not run into each other
PAUSE_BEFORE_S = {"desk": 0.25}  # the comma in "Token A17, desk 3"
MIN_CLIP_S = 0.15
MAX_CLIP_S = 2.5

# espeak-ng 1.51 has no Indian-English voice; British English is the closest.
ESPEAK_VOICE = {"hi": "hi", "gu": "gu", "en": "en-gb"}
LANGUAGE_NAME = {"hi": "हिन्दी", "gu": "ગુજરાતી", "en": "English"}

# --- Hindi -----------------------------------------------------------------
# fmt: off
# One row per ten: 0-9, 10-19, ... 90-99.
HI_NUMBERS = [
    "शून्य", "एक", "दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ",
    "दस", "ग्यारह", "बारह", "तेरह", "चौदह", "पंद्रह", "सोलह", "सत्रह", "अठारह", "उन्नीस",
    "बीस", "इक्कीस", "बाईस", "तेईस", "चौबीस", "पच्चीस", "छब्बीस", "सत्ताईस", "अट्ठाईस", "उनतीस",
    "तीस", "इकतीस", "बत्तीस", "तैंतीस", "चौंतीस", "पैंतीस", "छत्तीस", "सैंतीस", "अड़तीस", "उनतालीस",
    "चालीस", "इकतालीस", "बयालीस", "तैंतालीस", "चवालीस", "पैंतालीस", "छियालीस", "सैंतालीस", "अड़तालीस", "उनचास",
    "पचास", "इक्यावन", "बावन", "तिरपन", "चौवन", "पचपन", "छप्पन", "सत्तावन", "अट्ठावन", "उनसठ",
    "साठ", "इकसठ", "बासठ", "तिरसठ", "चौंसठ", "पैंसठ", "छियासठ", "सड़सठ", "अड़सठ", "उनहत्तर",
    "सत्तर", "इकहत्तर", "बहत्तर", "तिहत्तर", "चौहत्तर", "पचहत्तर", "छिहत्तर", "सतहत्तर", "अठहत्तर", "उन्यासी",
    "अस्सी", "इक्यासी", "बयासी", "तिरासी", "चौरासी", "पचासी", "छियासी", "सत्तासी", "अट्ठासी", "नवासी",
    "नब्बे", "इक्यानवे", "बानवे", "तिरानवे", "चौरानवे", "पचानवे", "छियानवे", "सत्तानवे", "अट्ठानवे", "निन्यानवे",
]
HI_HUNDREDS = ["एक सौ", "दो सौ", "तीन सौ", "चार सौ", "पाँच सौ", "छह सौ", "सात सौ", "आठ सौ", "नौ सौ"]
HI_THOUSANDS = ["एक हज़ार", "दो हज़ार", "तीन हज़ार", "चार हज़ार", "पाँच हज़ार",
                "छह हज़ार", "सात हज़ार", "आठ हज़ार", "नौ हज़ार"]
HI_LETTERS = ["ए", "बी", "सी", "डी", "ई", "एफ़", "जी", "एच", "आई", "जे", "के", "एल", "एम",
              "एन", "ओ", "पी", "क्यू", "आर", "एस", "टी", "यू", "वी", "डब्ल्यू", "एक्स", "वाई", "ज़ेड"]
HI_PHRASES = {"token": "टोकन नंबर", "desk": "डेस्क", "come": "पर आइए"}

# --- Gujarati --------------------------------------------------------------
# One row per ten: 0-9, 10-19, ... 90-99.
GU_NUMBERS = [
    "શૂન્ય", "એક", "બે", "ત્રણ", "ચાર", "પાંચ", "છ", "સાત", "આઠ", "નવ",
    "દસ", "અગિયાર", "બાર", "તેર", "ચૌદ", "પંદર", "સોળ", "સત્તર", "અઢાર", "ઓગણીસ",
    "વીસ", "એકવીસ", "બાવીસ", "તેવીસ", "ચોવીસ", "પચ્ચીસ", "છવ્વીસ", "સત્તાવીસ", "અઠ્ઠાવીસ", "ઓગણત્રીસ",
    "ત્રીસ", "એકત્રીસ", "બત્રીસ", "તેત્રીસ", "ચોત્રીસ", "પાંત્રીસ", "છત્રીસ", "સાડત્રીસ", "આડત્રીસ", "ઓગણચાળીસ",
    "ચાળીસ", "એકતાળીસ", "બેતાળીસ", "તેતાળીસ", "ચુંમાળીસ", "પિસ્તાળીસ", "છેતાળીસ", "સુડતાળીસ", "અડતાળીસ", "ઓગણપચાસ",
    "પચાસ", "એકાવન", "બાવન", "ત્રેપન", "ચોપન", "પંચાવન", "છપ્પન", "સત્તાવન", "અઠ્ઠાવન", "ઓગણસાઠ",
    "સાઠ", "એકસઠ", "બાસઠ", "ત્રેસઠ", "ચોસઠ", "પાંસઠ", "છાસઠ", "સડસઠ", "અડસઠ", "ઓગણસિત્તેર",
    "સિત્તેર", "એકોતેર", "બોતેર", "તોતેર", "ચુમોતેર", "પંચોતેર", "છોતેર", "સિત્યોતેર", "ઇઠ્યોતેર", "ઓગણએંસી",
    "એંસી", "એક્યાસી", "બ્યાસી", "ત્યાસી", "ચોર્યાસી", "પંચાસી", "છ્યાસી", "સિત્યાસી", "ઇઠ્યાસી", "નેવ્યાસી",
    "નેવું", "એકાણું", "બાણું", "ત્રાણું", "ચોરાણું", "પંચાણું", "છન્નું", "સત્તાણું", "અઠ્ઠાણું", "નવ્વાણું",
]
# Gujarati fuses the hundreds: બસો (200), ત્રણસો (300) ...
GU_HUNDREDS = ["એકસો", "બસો", "ત્રણસો", "ચારસો", "પાંચસો", "છસો", "સાતસો", "આઠસો", "નવસો"]
GU_THOUSANDS = ["એક હજાર", "બે હજાર", "ત્રણ હજાર", "ચાર હજાર", "પાંચ હજાર",
                "છ હજાર", "સાત હજાર", "આઠ હજાર", "નવ હજાર"]
GU_LETTERS = ["એ", "બી", "સી", "ડી", "ઈ", "એફ", "જી", "એચ", "આઈ", "જે", "કે", "એલ", "એમ",
              "એન", "ઓ", "પી", "ક્યૂ", "આર", "એસ", "ટી", "યૂ", "વી", "ડબલ્યૂ", "એક્સ", "વાય", "ઝેડ"]
GU_PHRASES = {"token": "ટોકન નંબર", "desk": "ડેસ્ક", "come": "પર આવો"}

# --- English ---------------------------------------------------------------
EN_NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
] + [
    f"{tens} {ones}".strip()
    for tens in ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
    for ones in ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
]
EN_HUNDREDS = [f"{w} hundred" for w in EN_NUMBERS[1:10]]
EN_THOUSANDS = [f"{w} thousand" for w in EN_NUMBERS[1:10]]
EN_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]  # espeak-ng reads a lone capital as its name
EN_PHRASES = {"token": "Token number", "desk": "please go to desk"}
# fmt: on

WORDS = {
    "hi": (HI_PHRASES, HI_NUMBERS, HI_HUNDREDS, HI_THOUSANDS, HI_LETTERS),
    "gu": (GU_PHRASES, GU_NUMBERS, GU_HUNDREDS, GU_THOUSANDS, GU_LETTERS),
    "en": (EN_PHRASES, EN_NUMBERS, EN_HUNDREDS, EN_THOUSANDS, EN_LETTERS),
}

# Sentences for the duration table (label, desk).
SAMPLE_CALLS = [("A17", "3"), ("OPD-117", "Desk 12"), ("B2005", "D7"), ("C9999", "10")]
LISTEN_CALL = ("A17", "3")


def texts(lang: str) -> dict[str, str]:
    """stem -> the words espeak-ng speaks for it."""
    phrases, numbers, hundreds, thousands, letters = WORDS[lang]
    assert len(numbers) == 100 and len(hundreds) == 9 and len(thousands) == 9 and len(letters) == 26, lang
    out = dict(phrases)
    out.update({f"n{i}": w for i, w in enumerate(numbers)})
    out.update({f"h{i}": w for i, w in enumerate(hundreds, 1)})
    out.update({f"k{i}": w for i, w in enumerate(thousands, 1)})
    out.update({f"letter_{chr(ord('a') + i)}": w for i, w in enumerate(letters)})
    missing = set(all_stems(lang)) - set(out)
    extra = set(out) - set(all_stems(lang))
    if missing or extra:
        raise SystemExit(f"{lang}: stems missing {sorted(missing)}, unused {sorted(extra)}")
    return out


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def duration_s(path: Path) -> float:
    return float(run(["soxi", "-D", str(path)]).strip())


def render_word(voice: str, text: str, out: Path, pause_before: float = 0.0) -> None:
    """espeak-ng -> trim silence at both ends -> small pads -> 16 kHz mono Ogg/Vorbis."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        run(["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(raw), text])
        # silence 1 0.02 0.5%: drop leading audio below 0.5% until 20 ms above it; the
        # reverse/silence/reverse pair does the same at the end.
        run(
            [
                "sox",
                "-R",
                str(raw),
                "-r",
                str(SAMPLE_RATE),
                "-c",
                "1",
                "-C",
                str(VORBIS_QUALITY),
                str(out),
                "silence",
                "1",
                "0.02",
                "0.5%",
                "reverse",
                "silence",
                "1",
                "0.02",
                "0.5%",
                "reverse",
                "norm",
                "-1",
                "pad",
                f"{LEAD_PAD_S + pause_before:.3f}",
                f"{TAIL_PAD_S:.3f}",
            ]
        )


def render_chime(out: Path) -> None:
    """A soft two-tone "ding-dong" (E5 then C5) with a bell-like overtone and decay."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, (freq, start, length) in enumerate(((659.25, 0.0, 1.0), (523.25, 0.5, 1.2))):
            part = Path(tmp) / f"tone{i}.wav"
            run(
                [
                    "sox",
                    "-R",
                    "-r",
                    str(SAMPLE_RATE),
                    "-c",
                    "2",
                    "-n",
                    str(part),
                    "synth",
                    str(length),
                    "sine",
                    str(freq),
                    "sine",
                    str(freq * 2),
                    "remix",
                    "1v0.8,2v0.2",
                    "fade",
                    "h",
                    "0.01",
                    str(length),
                    str(length - 0.03),
                    "pad",
                    str(start),
                    "0",
                ]
            )
            parts.append(str(part))
        run(["sox", "-R", "-m", *parts, "-C", str(VORBIS_QUALITY), str(out), "norm", "-4"])


def generate(out_dir: Path, jobs: int) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks: list[tuple[str, str, str, Path]] = []  # (lang, stem, text, path)
    for lang in LANGUAGES:
        (out_dir / lang).mkdir(exist_ok=True)
        for stem, text in texts(lang).items():
            tasks.append((lang, stem, text, out_dir / lang / f"{stem}{CLIP_EXT}"))

    render_chime(out_dir / CHIME)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(
            pool.map(
                lambda t: render_word(ESPEAK_VOICE[t[0]], t[2], t[3], PAUSE_BEFORE_S.get(t[1], 0.0)), tasks
            )
        )
        durations = dict(zip(tasks, pool.map(lambda t: duration_s(t[3]), tasks), strict=True))

    languages: dict[str, Any] = {}
    for lang in LANGUAGES:
        clips = {
            stem: {"text": text, "ms": round(durations[(lang, stem, text, path)] * 1000)}
            for (lang_, stem, text, path) in tasks
            if lang_ == lang
        }
        languages[lang] = {"name": LANGUAGE_NAME[lang], "espeak_voice": ESPEAK_VOICE[lang], "clips": clips}

    manifest: dict[str, Any] = {
        "format": {"container": "ogg", "codec": "vorbis", "sample_rate": SAMPLE_RATE, "channels": 1},
        "generator": "scripts/gen_voice.py with "
        + run(["espeak-ng", "--version"]).split(" Data at")[0].strip(),
        "chime": {"path": CHIME, "ms": round(duration_s(out_dir / CHIME) * 1000)},
        "languages": languages,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", "utf-8")
    return manifest


def clip_ms(manifest: dict[str, Any], path: str) -> int:
    if path == manifest["chime"]["path"]:
        return int(manifest["chime"]["ms"])
    lang, name = path.split("/")
    return int(manifest["languages"][lang]["clips"][name.removesuffix(CLIP_EXT)]["ms"])


def report(manifest: dict[str, Any], out_dir: Path) -> list[str]:
    problems = []
    for lang, info in manifest["languages"].items():
        for stem, clip in info["clips"].items():
            if not MIN_CLIP_S * 1000 <= clip["ms"] <= MAX_CLIP_S * 1000:
                problems.append(f"{lang}/{stem} ({clip['text']}): {clip['ms']} ms")
    if not MIN_CLIP_S * 1000 <= manifest["chime"]["ms"] <= MAX_CLIP_S * 1000:
        problems.append(f"chime: {manifest['chime']['ms']} ms")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    count = sum(1 for _ in out_dir.rglob(f"*{CLIP_EXT}"))
    print(f"{count} clips, {total / 1024:.0f} KiB")
    for lang, info in manifest["languages"].items():
        ms = sorted(c["ms"] for c in info["clips"].values())
        print(f"  {lang}: shortest {ms[0]} ms, median {ms[len(ms) // 2]} ms, longest {ms[-1]} ms")
    print(
        f"\n{'token':<10} {'desk':<8} " + " ".join(f"{lang:>7}" for lang in LANGUAGES) + "   all (with chime)"
    )
    for label, desk in SAMPLE_CALLS:
        per_lang = [
            sum(clip_ms(manifest, p) for p in callout_sequence([lang], label, desk)[1:]) for lang in LANGUAGES
        ]
        whole = sum(clip_ms(manifest, p) for p in callout_sequence(list(LANGUAGES), label, desk))
        print(
            f"{label:<10} {desk:<8} "
            + " ".join(f"{ms / 1000:6.2f}s" for ms in per_lang)
            + f"   {whole / 1000:.2f}s"
        )
    return problems


def write_listen_sample(out_dir: Path) -> Path:
    ARTIFACT_DIR.mkdir(exist_ok=True)
    target = ARTIFACT_DIR / "callout_hi.wav"
    clips = [str(out_dir / p) for p in callout_sequence(["hi"], *LISTEN_CALL)]
    run(["sox", "-R", *clips, "-b", "16", str(target)])
    return target


def same_tree(a: Path, b: Path) -> list[str]:
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    diff = [f"only in {a.name}: {n}" for n in sorted(names_a - names_b)]
    diff += [f"only in new output: {n}" for n in sorted(names_b - names_a)]
    diff += [
        f"differs: {n}" for n in sorted(names_a & names_b) if not filecmp.cmp(a / n, b / n, shallow=False)
    ]
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="regenerate into a temp dir and diff with the committed clips"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install espeak-ng sox")

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "voice"
        manifest = generate(fresh, args.jobs)
        problems = report(manifest, fresh)
        if args.check:
            diff = same_tree(OUT_DIR, fresh)
            print("\n".join(diff) if diff else "committed clips are up to date")
            return 1 if diff or problems else 0
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        shutil.copytree(fresh, OUT_DIR)
    sample = write_listen_sample(OUT_DIR)
    print(
        f"\nlisten: {sample.relative_to(REPO)} ({duration_s(sample):.2f} s, Hindi call-out of {LISTEN_CALL})"
    )
    if problems:
        print(f"clips outside {MIN_CLIP_S:.2f}-{MAX_CLIP_S:.2f} s:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
