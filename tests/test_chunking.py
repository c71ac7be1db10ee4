"""Passages keep whole paragraphs and sentences where they fit, and always respect the budget."""

from retrieval.chunking import markdown_title, split_markdown, split_text, word_count


def test_short_text_is_one_passage():
    assert [p.text for p in split_text("One. Two.", "T", 50)] == ["One. Two."]


def test_paragraphs_are_packed_up_to_the_budget():
    text = "\n\n".join(["alpha beta gamma delta"] * 5)  # 4 words each
    passages = split_text(text, "T", 8)
    assert [word_count(p.text) for p in passages] == [8, 8, 4]


def test_long_sentence_and_long_word_runs_are_split_within_budget():
    text = "word " * 95 + "end."
    passages = split_text(text, "T", 10)
    assert all(word_count(p.text) <= 10 for p in passages)
    assert " ".join(p.text for p in passages).split() == text.split()


def test_heading_paths_and_fenced_code():
    md = "# Doc\n\nintro\n\n## A\n\ntext a\n\n```\n# not a heading\n```\n\n## B\n### B1\n\ntext b1\n"
    passages = split_markdown(md, "Doc", 100)
    assert [p.title for p in passages] == ["Doc", "Doc > A", "Doc > B > B1"]
    assert "# not a heading" in passages[1].text
    assert markdown_title(md) == "Doc"


def test_markdown_title_prefix_when_no_h1():
    passages = split_markdown("## Section\n\ntext", "Care guide", 100)
    assert passages[0].title == "Care guide > Section"
