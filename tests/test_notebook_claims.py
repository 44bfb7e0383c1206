"""What the text of notebooks 00-03 says about their outputs, checked against the kit's own results.

nbval compares a notebook's printout with the committed one; these tests hold the readings the text makes of it
("a near-tie", "gains, then loses", "ended by itself after 25 tokens"), so that an output that moves on another CPU
or another transformers fails here, next to the sentence that must change with it.
"""

from __future__ import annotations

import pytest

import smolkit

HAIKU = "Write a haiku about tea."  # notebook 01
DRAGON = "Write a short story about a dragon."  # notebooks 02 and 03
ONCE = "Once upon a time, there was a"  # notebook 03's story so far


def _probs(dist, tokens: list[str], temperature: float) -> list[float]:
    """The probabilities of ``tokens`` (spelled as the model's tokens) at ``temperature``."""
    by_token = {t.token: t.id for t in dist.top(20, "raw")}
    reshaped = dist.with_params(temperature=temperature)
    return [reshaped.prob_of(by_token[token]) for token in tokens]


def test_00_the_gguf_file_holds_what_the_text_says():
    """00, "What Q4_1 GGUF, de-quantized means": all 210 weight matrices of the 30 layers are Q4_1, the token
    embeddings Q8_0, the normalisation weights float32."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(smolkit.embedded.embedded_gguf_path()))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    layers = {name: kind for name, kind in kinds.items() if name.startswith("blk.")}
    matrices = [kind for name, kind in layers.items() if not name.endswith("_norm.weight")]
    norms = [kind for name, kind in kinds.items() if name.endswith("_norm.weight")]
    assert len({name.split(".")[1] for name in layers}) == 30
    assert (len(matrices), set(matrices)) == (210, {"Q4_1"})
    assert kinds["token_embd.weight"] == "Q8_0" and "output.weight" not in kinds  # tied: the embeddings score
    assert norms and set(norms) == {"F32"}


def test_01_the_greedy_haiku_ends_by_itself_after_25_tokens(lm):
    """01, exercise b: "With max_new_tokens=60 the haiku of section 4 ended by itself after 25 tokens"."""
    result = smolkit.generate(lm, HAIKU, smolkit.SamplingParams(temperature=0, max_new_tokens=60))
    assert (len(result.token_ids), result.samples[0].finish_reason) == (25, "stop")


def test_02_and_03_the_first_token_is_a_near_tie_that_low_temperature_keeps(lm):
    """02 "Look at the top two: nearly a tie, and greedy never takes the second" (with `Once` among the explorer's six
    buttons, exercise 02b); 03 "`As` and `The`, nearly tied at T = 1, are still nearly tied at T = 0.2 ... Greedy
    decoding would pick `As`"."""
    first = smolkit.next_token_distribution(lm, DRAGON)
    top = first.top(6)
    assert [t.token for t in top[:2]] == ["As", "The"] and top[0].prob - top[1].prob < 0.01
    assert "Once" in [t.token for t in top]
    cold = _probs(first, ["As", "The"], 0.2)
    assert cold[0] > cold[1] and cold[0] - cold[1] < 0.05


def test_03_the_later_near_ties_of_the_low_temperature_stories(lm):
    """03 section 5: after "The", ` sun` and ` night` are a near-tie; after "The sun had just set", ` on` and `,`
    (near-ties at T = 0.2: the runner-up keeps at least a quarter of the probability)."""
    for so_far, pair in (("The", [" sun", " night"]), ("The sun had just set", [" on", ","])):
        step = smolkit.next_token_distribution(lm, DRAGON, generated=so_far).with_params(temperature=0.2)
        assert [t.token for t in step.top(2)] == pair and step.top(2)[1].prob > 0.25


def test_03_which_favourites_gain_and_which_lose_as_temperature_falls(lm):
    """03 section 1: "` brave` only gains, ` majestic` gains a little at 0.7 and then loses, ` dragon` gains down to
    0.5 and loses at 0.3" (temperatures 1, 0.7, 0.5, 0.3)."""
    dist = smolkit.next_token_distribution(lm, DRAGON, generated=ONCE)
    assert dist.top(1)[0].token == " brave"
    rows = [_probs(dist, [" brave", " majestic", " dragon"], t) for t in (1.0, 0.7, 0.5, 0.3)]
    brave, majestic, dragon = ([row[i] for row in rows] for i in range(3))
    assert brave[0] < brave[1] < brave[2] < brave[3]
    assert majestic[0] < majestic[1] > majestic[2] > majestic[3]
    assert dragon[0] < dragon[1] < dragon[2] > dragon[3]


def test_03_at_t_1_5_the_tail_holds_most_of_the_probability(lm):
    """03 section 2: "at T = 1.5 they [all but the top 8] hold most of the probability"."""
    hot = smolkit.next_token_distribution(lm, DRAGON, generated=ONCE).with_params(temperature=1.5)
    assert 1 - sum(t.prob for t in hot.top(8)) > 0.5
