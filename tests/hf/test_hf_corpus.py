"""The fortunes corpus: parsing, de-duplication, and a split that is disjoint and deterministic."""

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")

from distiq.errors import DataError, DistiqError  # noqa: E402
from distiq.hf.corpus import FORTUNES_DIR, dedupe, load_fortunes, parse_fortunes, split_texts  # noqa: E402

FILE = (
    "A bird in the hand\n  is worth two in the bush.\n%\n"
    "B\bBo\bol\bld\bd and _\bu_\bn_\bd_\be_\br_\bl_\bi_\bn_\be_\bd text here.\n%\n"
    "  /\\_/\\\n ( o.o )\n  > ^ <   ---+---\n%\n"
    "short\n%\n"
    "A bird in the HAND is worth two in the bush.\n"
)


def test_parse_removes_overstrikes_and_joins_lines():
    entries = parse_fortunes(FILE)
    assert entries[0] == "A bird in the hand is worth two in the bush."
    assert entries[1] == "Bold and underlined text here."
    assert len(entries) == 5


def test_load_drops_art_short_and_duplicates(tmp_path):
    (tmp_path / "one").write_text(FILE)
    (tmp_path / "one.dat").write_bytes(b"\0\1binary index")
    (tmp_path / "one.u8").symlink_to(tmp_path / "one")
    (tmp_path / "two").write_text("Bold and underlined text here.\n%\nA second file has its own saying.\n")
    texts = load_fortunes(tmp_path)
    assert texts == [
        "A bird in the hand is worth two in the bush.",
        "Bold and underlined text here.",
        "A second file has its own saying.",
    ]


def test_missing_folder_names_it_and_the_install_line(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*apt-get install fortunes fortunes-min"):
        load_fortunes(tmp_path / "nowhere")


def test_dedupe_ignores_case_and_spacing():
    assert dedupe(["Hello  world", "hello world", "other"]) == ["Hello  world", "other"]


def test_split_is_disjoint_deterministic_and_order_free():
    texts = [f"text number {i} of the corpus" for i in range(500)] + ["text number 3 of the corpus"]
    train, held = split_texts(texts, 100, seed=0)
    assert len(held) == 100 and len(train) == 400
    assert not set(train) & set(held)
    assert split_texts(texts, 100, seed=0) == (train, held)
    train_r, held_r = split_texts(list(reversed(texts)), 100, seed=0)
    assert set(held_r) == set(held)
    assert set(split_texts(texts, 100, seed=1)[1]) != set(held)
    assert len(split_texts(texts, 0.2)[1]) == 100


@pytest.mark.parametrize("held_out", [1.5, 501, -1])
def test_split_rejects_impossible_sizes(held_out):
    with pytest.raises(DistiqError, match="held_out"):
        split_texts([f"t{i}" for i in range(500)], held_out)


@pytest.mark.skipif(not FORTUNES_DIR.is_dir(), reason="apt-get install fortunes fortunes-min")
def test_installed_fortunes_split_disjoint():
    texts = load_fortunes()
    assert len(texts) > 5000
    train, held = split_texts(texts, 1000)
    assert len(held) == 1000 and not set(train) & set(held)
    assert len(train) + len(held) == len(texts)
