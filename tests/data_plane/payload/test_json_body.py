"""inspect_json / with_model: strict validation and a byte-exact model splice."""

from __future__ import annotations

import json

import pytest

from data_plane.payload import JsonFacts, PayloadError, inspect_json, with_model


def splice(body: bytes, slug: str) -> bytes:
    return with_model(body, inspect_json(body), slug)


def test_facts_of_a_typical_chat_body() -> None:
    body = (
        b'{"model":"gpt-4.1-mini","messages":[{"role":"user","content":"hi"}],'
        b'"stream":true,"max_tokens":120,"max_completion_tokens":90,"max_output_tokens":7}'
    )
    facts = inspect_json(body)
    assert facts.model == "gpt-4.1-mini" and facts.stream is True
    assert facts.model_span == (9, 23) and body[9:23] == b'"gpt-4.1-mini"'
    assert (facts.max_tokens, facts.max_completion_tokens, facts.max_output_tokens) == (120, 90, 7)
    assert facts.output_token_limit == 90
    assert facts.object_start == 0 and facts.members == 6


def test_gemini_generation_config_and_absent_fields() -> None:
    facts = inspect_json(b'{"contents":[],"generationConfig":{"maxOutputTokens":160,"temperature":0.3}}')
    assert facts == JsonFacts(
        model=None, stream=None, model_span=None, object_start=0, members=2, gemini_max_output_tokens=160
    )
    assert facts.output_token_limit == 160
    assert inspect_json(b'{"generation_config":{"max_output_tokens":5}}').gemini_max_output_tokens == 5


def test_non_integer_token_caps_are_not_facts() -> None:
    facts = inspect_json(b'{"max_tokens":1.5,"max_output_tokens":true,"max_completion_tokens":"9"}')
    assert (facts.max_tokens, facts.max_output_tokens, facts.max_completion_tokens) == (None, None, None)


def test_splice_replaces_only_the_top_level_model_value() -> None:
    body = (
        b'\r\n {\t"temperature" :0.3 ,\n  "x-unknown": {"model": "nested-must-stay", "deep": [{"model": 1}]},'
        b'\r\n  "model"\t:\t "my\\u0020model\\/\\u00e9"  ,"tools":[{"model":"tool"}],\n'
        b'  "extra_unknown_field": [1, 2.50, -0, 1E+2, null, true, false, "\\ud83d\\ude00"]\n}\r\n'
    )
    facts = inspect_json(body)
    assert facts.model == "my model/\u00e9"
    assert facts.object_start == 3
    out = with_model(body, facts, 'up/"slug"\u00e9')
    start, end = facts.model_span or (0, 0)
    encoded = json.dumps('up/"slug"\u00e9', ensure_ascii=False).encode()
    assert out == body[:start] + encoded + body[end:]
    assert out.count(b'"nested-must-stay"') == 1 and b'"model":"tool"' in out
    assert json.loads(out)["model"] == 'up/"slug"\u00e9'
    assert inspect_json(out).model == 'up/"slug"\u00e9'


def test_model_as_last_member_and_after_other_fields() -> None:
    body = b'{"a":{"b":[1,{"model":"inner"}]},"model":"last"}'
    assert splice(body, "s") == b'{"a":{"b":[1,{"model":"inner"}]},"model":"s"}'


def test_model_inserted_first_when_absent() -> None:
    assert splice(b'{"a":1}', "s") == b'{"model":"s","a":1}'
    assert splice(b"  {  }  ", "s") == b'  {"model":"s"  }  '
    assert splice(b'\n{\n"nested":{"model":"x"}}', "s") == b'\n{"model":"s",\n"nested":{"model":"x"}}'


def test_null_model_and_stream_mean_absent_and_null_is_replaced() -> None:
    body = b'{"prompt":"cat", "model" : null ,"stream":null}'
    facts = inspect_json(body)
    assert (facts.model, facts.stream, facts.model_span) == (None, None, (27, 31))
    assert body[27:31] == b"null"
    assert with_model(body, facts, "dall-e-3") == b'{"prompt":"cat", "model" : "dall-e-3" ,"stream":null}'


def test_slug_is_json_escaped() -> None:
    out = splice(b'{"model":"m"}', 'a"b\\c\n\u2028')
    assert out == b'{"model":"a\\"b\\\\c\\n\xe2\x80\xa8"}'
    assert json.loads(out)["model"] == 'a"b\\c\n\u2028'


REJECTIONS: list[tuple[bytes, str, str | None]] = [
    (b"", "invalid_json", None),
    (b" \r\n\t", "invalid_json", None),
    (b'{"model":"\xff"}', "invalid_json", None),
    (b'{"a":"\xed\xa0\x80"}', "invalid_json", None),  # UTF-8-encoded surrogate
    (b'{"a":"\xc0\xaf"}', "invalid_json", None),  # overlong encoding
    (b'{"a":"\\ud800"}', "invalid_json", None),  # lone surrogate escape
    (b'{"a":NaN}', "invalid_json", None),
    (b'{"a":Infinity}', "invalid_json", None),
    (b'{"a":-Infinity}', "invalid_json", None),
    (b'{"a":[1,NaN]}', "invalid_json", None),
    (b'{"a":1e999}', "invalid_json", None),
    (b'{"a":' + b"9" * 5000 + b"}", "invalid_json", None),
    (b'{"a":1} {"b":2}', "invalid_json", None),
    (b'{"a":1}x', "invalid_json", None),
    (b'{"a":1,}', "invalid_json", None),
    (b"{'a':1}", "invalid_json", None),
    (b'{"a":"x\ny"}', "invalid_json", None),  # raw control character in a string
    (b'\xef\xbb\xbf{"a":1}', "invalid_json", None),  # BOM
    (b'{"a":1', "invalid_json", None),
    (b"[]", "invalid_json", None),
    (b'"model"', "invalid_json", None),
    (b"null", "invalid_json", None),
    (b"42", "invalid_json", None),
    (b'{"model":"a","model":"b"}', "duplicate_key", "model"),
    (b'{"model":"a","x":1,"model":"a"}', "duplicate_key", "model"),
    (b'{"model":"a","\\u006dodel":"b"}', "duplicate_key", "model"),
    (b'{"stream":false,"stream":true}', "duplicate_key", None),
    (b'{"a":{"b":1,"b":2}}', "duplicate_key", None),
    (b'{"a":[{"x":1},{"y":1,"y":2}]}', "duplicate_key", None),
    (b'{"model":1}', "invalid_model", "model"),
    (b'{"model":["a"]}', "invalid_model", "model"),
    (b'{"model":{"name":"a"}}', "invalid_model", "model"),
    (b'{"stream":"true"}', "invalid_stream", "stream"),
    (b'{"stream":1}', "invalid_stream", "stream"),
    (b'{"a":' + b"[" * 64 + b"]" * 64 + b"}", "json_too_deep", None),
    (b'{"a":' * 65 + b"1" + b"}" * 65, "json_too_deep", None),
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "json_too_deep", None),
]


@pytest.mark.parametrize(("body", "code", "param"), REJECTIONS, ids=lambda v: repr(v)[:40])
def test_rejections(body: bytes, code: str, param: str | None) -> None:
    with pytest.raises(PayloadError) as info:
        inspect_json(body)
    assert (info.value.code, info.value.param, info.value.status) == (code, param, 400)
    assert 0 < len(info.value.message) <= 160


def test_distinct_messages_for_each_cause() -> None:
    def message(body: bytes) -> str:
        with pytest.raises(PayloadError) as info:
            inspect_json(body)
        return info.value.message

    assert "UTF-8" in message(b'{"a":"\xff"}')
    assert "NaN" in message(b'{"a":-Infinity}')
    assert "deeper than 64" in message(b'{"a":' * 65 + b"1" + b"}" * 65)
    assert "deeper than 3" in _message_at_depth(3)
    assert "empty" in message(b"")
    assert "object" in message(b"[]")
    assert message(b'{"model":"a","model":"b"}') == 'duplicate key "model" in a JSON object'


def _message_at_depth(limit: int) -> str:
    with pytest.raises(PayloadError) as info:
        inspect_json(b'{"a":{"b":{"c":{}}}}', max_depth=limit)
    return info.value.message


def test_depth_limit_is_inclusive() -> None:
    inspect_json(b'{"a":' * 64 + b"1" + b"}" * 64)
    inspect_json(b'{"a":{"b":{}}}', max_depth=3)
    inspect_json(b'{"a":' + b"[" * 63 + b"]" * 63 + b"}")


def test_error_messages_never_echo_unbounded_input() -> None:
    key = "k" * 10_000_000
    body = json.dumps({"x": {key: 1}})[:-2].encode() + b', "' + key.encode() + b'": 2}}'
    with pytest.raises(PayloadError) as info:
        inspect_json(body)
    assert info.value.code == "duplicate_key" and len(info.value.message) < 100
    control = b'{"\\u0000\\n\\"evil": 1, "\\u0000\\n\\"evil": 2}'
    with pytest.raises(PayloadError) as info:
        inspect_json(control)
    assert info.value.message.isprintable() and "\n" not in info.value.message


def test_huge_model_is_accepted_and_spliced() -> None:
    model = "m" * 10_000_000
    body = b'{"model":"' + model.encode() + b'","a":1}'
    facts = inspect_json(body)
    assert facts.model == model
    assert with_model(body, facts, "s") == b'{"model":"s","a":1}'
