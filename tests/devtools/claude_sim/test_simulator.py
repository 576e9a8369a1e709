"""Usage and the prompt cache, as the real API reports them."""

from __future__ import annotations

from tests.devtools.claude_sim.helpers import (
    POLITICS_TEXT,
    create,
)


def test_cached_system_prompt_is_created_once_then_read(client) -> None:
    system = [
        {
            "type": "text",
            "text": "You classify texts. " * 40,
            "cache_control": {"type": "ephemeral"},
        }
    ]

    first = create(client, POLITICS_TEXT, system=system).usage
    second = create(client, POLITICS_TEXT, system=system).usage

    assert first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert second.cache_creation_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.input_tokens == first.input_tokens


def test_uncached_system_prompt_reports_no_cache_tokens(client) -> None:
    usage = create(client, POLITICS_TEXT, system="You classify texts.").usage

    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 0
