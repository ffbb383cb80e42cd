"""The pure parts of the key-value layout: keys, document envelopes, chunks, index documents."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_backends.kv.active import (
    PAGE_SIZE,
    Active,
    Entry,
    IndexTable,
    Page,
    TaskIndex,
    page_of,
)
from triggers_backends.kv.documents import DocRef, decode, encode, join, split, stored_keys
from triggers_backends.kv.keys import (
    DEFAULT_PREFIX,
    MAX_PREFIX_LENGTH,
    SessionKeys,
    check_prefix,
    digest,
)
from triggers_backends.kv_client import MAX_KEY_LENGTH
from triggers_core.errors import SerializationError
from triggers_core.testing.storage_contract import AWKWARD_UIDS

# -- keys -----------------------------------------------------------------------------

#: Any text, including lone surrogates (UIDs are arbitrary Python strings).
ANY_TEXT = st.text(st.characters(codec=None), max_size=400)


def valid_key(key: str) -> bool:
    return (
        0 < len(key.encode()) <= MAX_KEY_LENGTH
        and key.isascii()
        and key.isprintable()
        and " " not in key
    )


def all_keys(keys: SessionKeys, name: str) -> list[str]:
    rev = "0123456789abcdef"
    return [
        keys.active,
        keys.marker,
        keys.config(rev),
        keys.latest(name, rev),
        keys.page(name, 10**9, rev),
        keys.instance(name, rev),
        keys.page(name, 10**9, rev) + ":99999",  # a chunk
    ]


@pytest.mark.parametrize("uid", [*AWKWARD_UIDS, "x" * 5000, "\udcff lone surrogate", "\x00"])
def test_awkward_uids_and_names_make_valid_keys(uid: str) -> None:
    keys = SessionKeys("p" * MAX_PREFIX_LENGTH, uid)
    for key in all_keys(keys, uid):
        assert valid_key(key), key
    assert f"{{{keys.session}}}" in keys.active  # the hash tag routes the session


@given(ANY_TEXT, ANY_TEXT)
def test_distinct_values_get_distinct_keys(first: str, second: str) -> None:
    a, b = SessionKeys(DEFAULT_PREFIX, first), SessionKeys(DEFAULT_PREFIX, second)
    assert (a.active == b.active) == (first == second)
    assert (a.instance(first, "r") == a.instance(second, "r")) == (first == second)
    for key in all_keys(a, second):
        assert valid_key(key), key


def test_digest_is_128_bits_of_base32() -> None:
    value = digest("survey-42")
    assert len(value) == 26
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert digest("survey-42") == value
    assert digest("Survey-42") != value


@pytest.mark.parametrize("bad", ["with space", "brace{", "}", "tab\t", "ü", "x" * 101])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(bad)
    with pytest.raises(ValueError, match="prefix"):
        SessionKeys(bad, "uid")


def test_prefix_characters_are_printable_ascii_without_spaces_or_braces() -> None:
    """The prefix check accepts exactly the characters of its definition, one by one."""
    for code in [*range(0x3000), 0xFEFF, 0x10FFFF]:
        char = chr(code)
        wanted = char.isascii() and char.isprintable() and char not in " {}"
        try:
            accepted = check_prefix(f"p{char}q:") == f"p{char}q:"
        except ValueError:
            accepted = False
        assert accepted is wanted, (hex(code), wanted)
    assert check_prefix("") == ""
    assert check_prefix("x" * 100) == "x" * 100
    with pytest.raises(ValueError, match="prefix"):
        check_prefix("ok:\n")  # a trailing newline is a character like the others
    with pytest.raises(TypeError, match="must be a string"):
        check_prefix(b"bytes:")  # type: ignore[arg-type]


# -- envelopes and chunks -------------------------------------------------------------


def test_envelope_round_trip_and_checks() -> None:
    raw = encode("page", "uid-1", {"x": [1, "ü"]})
    assert decode(raw, "page", "uid-1", "doc") == {"x": [1, "ü"]}
    with pytest.raises(SerializationError, match="not 'instance'"):
        decode(raw, "instance", "uid-1", "doc")
    with pytest.raises(SerializationError, match="belongs to session 'uid-1'"):
        decode(raw, "page", "uid-2", "doc")
    newer = raw.replace(b'"layout":1', b'"layout":2')
    with pytest.raises(SerializationError, match="newer"):
        decode(newer, "page", "uid-1", "doc")
    extra = raw.replace(b'"layout":1', b'"layout":1,"later":true')
    with pytest.raises(SerializationError, match="unknown fields"):
        decode(extra, "page", "uid-1", "doc")
    with pytest.raises(SerializationError, match="JSON"):
        decode(b"\x80\x04garbage", "page", "uid-1", "doc")


@given(st.binary(max_size=3000), st.integers(1, 700))
def test_split_then_join_round_trips(data: bytes, limit: int) -> None:
    ref, items = split("k", "rev", data, limit)
    assert all(len(v) <= limit for v in items.values())
    assert sorted(items) == sorted(stored_keys("k", ref))
    assert (ref.chunks == 0) == (len(data) <= limit)
    assert join("k", ref, items, "doc") == data
    assert DocRef.from_json(ref.to_json(), "ref") == ref


def test_a_missing_or_altered_chunk_is_detected() -> None:
    ref, items = split("k", "rev", b"abcdefghij", 3)
    assert ref.chunks == 4
    assert join("k", ref, {k: v for k, v in items.items() if k != "k:2"}, "doc") is None
    items["k:1"] = b"XYZ"
    with pytest.raises(SerializationError, match="digest"):
        join("k", ref, items, "doc")


@pytest.mark.parametrize("bad", [[], ["r", 2], ["r", 0, "d"], ["r", True, "d"], [""], "r", [1]])
def test_bad_references_are_refused(bad: object) -> None:
    with pytest.raises(SerializationError, match="reference"):
        DocRef.from_json(bad, "ref")


# -- index documents ------------------------------------------------------------------


def test_page_round_trip_and_flags() -> None:
    entries = {
        256: Entry("finished", DocRef("a")),
        300: Entry("unstarted", DocRef("b", 2, "d" * 32)),
    }
    page = Page("t", 1, entries)
    assert page.has_unstarted
    assert page.has_unresolved
    assert Page.from_body(page.to_body(), "t", 1, "page") == page
    assert not Page("t", 1, {256: entries[256]}).has_unresolved
    with pytest.raises(SerializationError, match="not page 2"):
        Page.from_body(page.to_body(), "t", 2, "page")
    with pytest.raises(SerializationError, match="does not belong"):
        Page.from_body(Page("t", 0, entries).to_body(), "t", 0, "page")
    body = page.to_body()
    body["entries"]["256"] = ["done", "a"]
    with pytest.raises(SerializationError, match="status"):
        Page.from_body(body, "t", 1, "page")
    assert page_of(255) == 0
    assert page_of(PAGE_SIZE) == 1


def test_active_round_trip_and_strictness() -> None:
    active = Active(
        version=7,
        header={"schemaVersion": 1, "counters": {"t": 300}},
        config=DocRef("c"),
        latest={"x": DocRef("k", 3, "e" * 32)},
        index=IndexTable.of(
            {
                "t": TaskIndex({0: DocRef("p0"), 1: DocRef("p1")}, frozenset({1}), frozenset({1})),
                "chunked page; odd name": TaskIndex({0: DocRef("p", 2, "f" * 32)}),
            }
        ),
    )
    again = Active.from_body(json.loads(json.dumps(active.to_body())), "active")
    assert again == active
    assert again.index["t"].pages[1] == DocRef("p1")
    body = active.to_body()
    body["idempotency"] = []
    with pytest.raises(SerializationError, match="unknown fields"):
        Active.from_body(body, "active")
    body = active.to_body()
    body["version"] = -1
    with pytest.raises(SerializationError, match="version"):
        Active.from_body(body, "active")
    body = active.to_body()
    body["index"]["t"] = {"pages": {}}
    with pytest.raises(SerializationError, match="a text per task"):
        Active.from_body(body, "active")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0=r;5;", "do not exist"),
        ("0=r;;", None),
        ("0=r,1=s/2/d;1;0", None),
        ("0=r", "invalid task index"),
        ("x=r;;", "not a number"),
        ("0=r/2;;", "invalid page reference"),
        ("0=r/0/d;;", "reference"),
        ("00=r;;", "not a number"),
    ],
)
def test_task_index_texts_are_decoded_strictly_when_used(text: str, problem: str | None) -> None:
    table = IndexTable({"t": text})
    assert "t" in table
    if problem is None:
        assert IndexTable.of({"t": table["t"]}).to_json() == {"t": text}
        return
    with pytest.raises(SerializationError, match=problem):
        table["t"]


@given(
    pages=st.dictionaries(
        st.integers(0, 60),
        st.tuples(st.text("abcdef0123", min_size=1, max_size=8), st.booleans()),
        max_size=12,
    ),
    changes=st.lists(
        st.tuples(st.integers(0, 60), st.text("ghij456789", min_size=1, max_size=8)), max_size=4
    ),
)
def test_a_task_index_keeps_the_text_of_its_pages_as_formatting_would_write_it(
    pages: dict[int, tuple[str, bool]], changes: list[tuple[int, str]]
) -> None:
    """The texts an index keeps from its parse, after pages are replaced, write the same
    text as formatting every reference anew would (a kept text never names the wrong
    reference)."""

    def ref(rev: str, chunked: bool) -> DocRef:
        return DocRef(rev, 3, "d1gest") if chunked else DocRef(rev)

    fresh = TaskIndex({n: ref(rev, chunked) for n, (rev, chunked) in pages.items()})
    read = TaskIndex.from_text(fresh.to_text(), "t")
    assert (read.texts and read == fresh) or not pages
    for number, rev in changes:
        read = read.with_page(number, DocRef(rev), unstarted=number % 2 == 0, unresolved=True)
        fresh = TaskIndex(
            {**fresh.pages, number: DocRef(rev)},
            read.unstarted,
            read.unresolved,
        )
        assert read.to_text() == fresh.to_text()
        assert TaskIndex.from_text(read.to_text(), "t") == read
