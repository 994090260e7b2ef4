"""Page catalogs: every language has every key with the same placeholders; t() formats per locale."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.requests import Request

from kiosk_ui.i18n import LANGS, Translator, catalogs, load_language, pick_lang

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def test_every_language_has_the_same_keys() -> None:
    cats = catalogs()
    english = set(cats["en"])
    assert len(english) > 100
    for lang in LANGS:
        missing, extra = english - set(cats[lang]), set(cats[lang]) - english
        assert not missing and not extra, (lang, sorted(missing)[:10], sorted(extra)[:10])


def test_translations_are_real_and_keep_placeholders() -> None:
    cats = catalogs()
    scripts = {"hi": re.compile(r"[\u0900-\u097F]"), "gu": re.compile(r"[\u0A80-\u0AFF]")}
    for key, text in cats["en"].items():
        want = set(PLACEHOLDER.findall(text))
        for lang in LANGS:
            other = cats[lang][key]
            assert other.strip(), (lang, key)
            assert set(PLACEHOLDER.findall(other)) == want, (lang, key)
    for lang, script in scripts.items():
        native = [k for k, v in cats[lang].items() if script.search(v)]
        assert len(native) > 0.8 * len(cats[lang]), lang  # not English left in place


def test_language_folder_files_are_merged_and_clashes_refused(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "a.json").write_text(json.dumps({"page": {"title": "A", "nested": {"x": "y"}}}))
    (tmp_path / "en" / "admin.json").write_text(json.dumps({"admin": {"title": "Admin"}}))
    assert load_language("en", tmp_path) == {"page.title": "A", "page.nested.x": "y", "admin.title": "Admin"}
    (tmp_path / "en" / "b.json").write_text(json.dumps({"page.title": "B"}))
    with pytest.raises(ValueError, match=r"page\.title"):
        load_language("en", tmp_path)
    (tmp_path / "en" / "b.json").write_text(json.dumps({"bad": 3}))
    with pytest.raises(ValueError, match="string"):
        load_language("en", tmp_path)


def test_t_formats_numbers_per_locale_and_falls_back() -> None:
    en, hi, gu = Translator("en"), Translator("hi"), Translator("gu")
    assert en("status.ahead", n=3) == "3 ahead of you"
    assert hi("status.ahead", n=3) == "आपसे पहले 3"
    assert en("status.ahead", n=123456) == "1,23,456 ahead of you"  # Indian grouping
    assert gu("console.minutes", n=12) == "12 મિનિટ"
    assert en("no.such.key") == "no.such.key"
    assert Translator("fr").lang == "en"
    assert en("status.ahead") == "{n} ahead of you"  # no params: the text as written
    at = datetime(2026, 11, 22, 9, 5, tzinfo=UTC)
    assert en.time(at) == "2:35\u202fpm"  # Asia/Kolkata (CLDR puts a narrow space before pm)
    assert hi.number(1234567.5) == "12,34,567.5"
    assert set(en.subset("board.")) == {k for k in catalogs()["en"] if k.startswith("board.")}


def _request(query: str = "", cookie: str = "", accept: str = "") -> Request:
    headers = [(b"cookie", cookie.encode()), (b"accept-language", accept.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
                    "headers": headers})  # fmt: skip


def test_language_choice_order() -> None:
    assert pick_lang(_request()) == "en"
    assert pick_lang(_request(accept="gu-IN,gu;q=0.9,en;q=0.8")) == "gu"
    assert pick_lang(_request(accept="fr,hi;q=0.5")) == "hi"
    assert pick_lang(_request(cookie="opd_lang=hi", accept="gu")) == "hi"
    assert pick_lang(_request(query="lang=gu", cookie="opd_lang=hi")) == "gu"
    assert pick_lang(_request(query="lang=xx", cookie="opd_lang=zz")) == "en"
