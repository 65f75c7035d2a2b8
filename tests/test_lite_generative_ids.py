"""The generative baseline's id rendering (P5 / POD): the history is written as the ids the model answers with."""

from __future__ import annotations

from tslrec.lite_llm4rec.generative import GenerativeConfig, history_prompt, identifier, item_ids_as_text


def test_item_ids_as_text_matches_the_written_identifier():
    text = item_ids_as_text(12)
    assert len(text) == 13 and text[0] == "" and text[7] == "7"
    assert all(identifier(i) == " " + text[i] for i in range(1, 13))  # read in the history as the answer is written


def test_history_prompt_with_ids_keeps_the_last_items_oldest_first():
    prompt = history_prompt(item_ids_as_text(12), [0, 3, 11, 5, 9], GenerativeConfig(max_history=3))
    assert "oldest first: 11; 5; 9." in prompt and " 3;" not in prompt
