"""What the notebooks' text says about their outputs, checked against the kit's own results.

nbval compares a notebook's printout with the committed one; these tests hold the readings the text makes of it
("a near-tie", "gains, then loses", "ended by itself after 25 tokens", "from about 1.1 the model turns to a new
line"), rebuilt here with the notebooks' prompts and parameters, so that an output that moves on another CPU or
another transformers fails here, next to the sentence that must change with it. Notebooks 00-07 so far.
"""

from __future__ import annotations

import math

import pytest

import smolkit
from smolkit import SamplingParams

pytestmark = pytest.mark.slow

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


POEM = "Write a poem about the sea."
GREEDY = SamplingParams(temperature=0, max_new_tokens=48)
FRANCE = ("What is the capital of France?", "The capital of France is")


@pytest.fixture(scope="module")
def cats(lm):
    return smolkit.next_token_distribution(lm, "Tell me about cats.", generated="Cats are")


@pytest.fixture(scope="module")
def sure(lm):
    return smolkit.next_token_distribution(lm, FRANCE[0], generated=FRANCE[1])


@pytest.fixture(scope="module")
def weather(lm):
    return smolkit.next_token_distribution(lm, "Describe the weather today.", generated="Today the weather is")


@pytest.fixture(scope="module")
def loop(lm):
    """Notebooks 06 and 07: the greedy poem and the next-token distribution after it."""
    looped = smolkit.generate(lm, POEM, GREEDY)
    return looped, smolkit.next_token_distribution(lm, POEM, generated=looped.text + "\n")


def _rows(dist, n=8, **penalties):
    return {r["token"]: r for r in smolkit.penalty_rows(dist, n=n, **penalties)}


def test_04_top_p_keeps_at_least_top_p_and_the_last_token_crosses_it(cats):
    """04 §3: kept_mass is at least top_p; without the last kept token it would be short of top_p."""
    for top_p in (0.1, 0.5, 0.8, 0.9, 0.95, 0.99):
        cut = cats.with_params(top_p=top_p)
        kept = cut.surviving()
        assert cut.kept_mass() >= top_p - 1e-6
        probs = [t.prob for t in cats.top(kept)]
        assert sum(probs[:-1]) < top_p


def test_04_the_last_percent_is_spread_over_tens_of_thousands_of_tokens(cats):
    assert cats.surviving() - cats.with_params(top_p=0.99).surviving() > 10_000


def test_04_a_sure_prompt_has_a_nucleus_of_one_and_an_open_one_a_wide_nucleus(sure, cats):
    """04 §5 and 05 §3: ' Paris' holds more than 90 % (05: about 95 %); top_p=0.9 keeps it alone."""
    assert sure.top(1)[0].token == " Paris" and 0.93 < sure.top(1)[0].prob < 0.97
    assert sure.with_params(top_p=0.9).surviving() == 1
    assert cats.with_params(top_p=0.9).surviving() >= 10


def test_04_a_top_token_at_20_percent_is_kept_alone_at_top_p_0_2(cats, sure):
    """04 §6: at top_p 0.2 a step whose top token holds 20 % or more keeps that token only."""
    for dist in (cats, sure):
        if dist.top(1)[0].prob >= 0.2:
            assert dist.with_params(top_p=0.2).surviving() == 1


def test_04_higher_temperature_keeps_more_tokens_at_the_same_top_p(cats):
    """04 §4: temperature comes first in transformers, so a higher one flattens the curve."""
    counts = [cats.with_params(top_p=0.9, temperature=t).surviving() for t in (0.5, 0.7, 1.0, 1.5)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_05_top_k_5_keeps_about_half_on_the_open_prompt_and_most_on_the_sure_one(weather, sure):
    """05 §3: 'keeping 5 throws away about half'; on the sure prompt the other four carry little."""
    assert 0.4 < weather.with_params(top_k=5).kept_mass() < 0.6
    assert sure.with_params(top_k=5).kept_mass() - sure.top(1)[0].prob < 0.05


def test_05_the_smallest_top_k_reaching_80_percent_is_what_top_p_0_8_keeps(weather):
    """05 exercise b asks why the two are the same: top_p keeps the fewest most likely tokens reaching 0.8."""
    k = next(k for k in range(1, 1000) if weather.with_params(top_k=k).kept_mass() >= 0.8)
    assert weather.with_params(top_p=0.8).surviving() == k


def test_05_temperature_changes_shares_not_the_number_top_k_keeps(weather):
    assert {weather.with_params(top_k=10, temperature=t).surviving() for t in (0.3, 1.0, 2.0)} == {10}


def test_06_the_greedy_poem_loops_and_A_starts_the_repeated_line(loop):
    """06 §1, §3: the poem repeats itself; after it, 'A' (generated twice, as 'Abe a sea of dreams' shows) leads
    'Where' (never generated); 'The' and 'In' were generated too; none of them is in the prompt."""
    looped, dist = loop
    assert smolkit.repeated_ngram_fraction(looped.token_ids) > 0.2
    assert looped.text.count("Abe a sea of dreams") == 2
    rows = _rows(dist, n=6, repetition_penalty=1.3)
    assert list(rows)[:2] == ["A", "Where"]
    assert rows["A"]["generated"] == 2 and rows["Where"]["generated"] == 0
    assert rows["The"]["generated"] > 0 and rows["In"]["generated"] > 0
    assert not any(r["in prompt"] for r in rows.values())


def test_06_dividing_by_1_3_takes_about_6_to_7_points_from_the_generated_tokens(loop):
    """06 §3: 'losing about 6 to 7 points'; 7 points is a factor of about a thousand."""
    rows = _rows(loop[1], n=6, repetition_penalty=1.3)
    for token in ("A", "The", "In"):
        lost = rows[token]["logit"] - rows[token]["repetition 1.3"]
        assert 5.9 < lost < 7.3
    assert 900 < math.exp(7) < 1200


def test_06_the_loop_gives_way_to_Where_between_1_05_and_1_2(loop):
    """06 §3 and exercise a: below 1 the loop is more likely; 'A' still leads at 1.05, 'Where' at 1.2."""
    dist = loop[1]
    rows = {r["repetition_penalty"]: r for r in smolkit.sweep(dist, "repetition_penalty", [0.8, 0.9, 1.0, 1.05, 1.2])}
    assert rows[0.8]["p_top"] > rows[0.9]["p_top"] > rows[1.0]["p_top"]
    assert rows[1.05]["top"] == "A" and rows[1.2]["top"] == "Where"


def test_06_and_07_the_prompt_counts_for_repetition_penalty_only(lm):
    """06 §5, 07 §3: ' France' is in the question, so repetition_penalty pushes it down; presence does not."""
    france = smolkit.next_token_distribution(lm, FRANCE[0], generated="The capital of")
    row = _rows(france, n=1)[" France"]
    assert row["in prompt"] and row["generated"] == 0
    assert row["repetition 1.3"] < row["logit"] == row["presence 1"] == row["frequency 0.5"]
    assert france.with_params(repetition_penalty=1.3).top(1)[0].prob < france.top(1)[0].prob
    assert france.with_params(presence_penalty=2.0).top(1)[0].prob == pytest.approx(france.top(1)[0].prob)


def test_06_below_1_the_poem_repeats_more_and_above_1_less(lm):
    """06 §4: the same greedy decoding at 0.8, 1.0 and 1.2."""
    rep = {
        r: smolkit.repeated_ngram_fraction(smolkit.generate(lm, POEM, GREEDY.replace(repetition_penalty=r)).token_ids)
        for r in (0.8, 1.0, 1.2)
    }
    assert rep[0.8] > rep[1.0] > rep[1.2]


def test_07_A_leads_Where_by_1_5_points_and_the_penalties_cost_what_section_2_says(loop):
    """07 §2: presence takes 1 point, frequency 0.5 x 2 = 1, repetition about 7; 'In', generated once, loses 0.5 to
    frequency; presence must take more than 1.5 points before 'Where' leads."""
    dist = loop[1]
    rows = _rows(dist)
    a, where = rows["A"], rows["Where"]
    assert 1.45 < a["logit"] - where["logit"] < 1.55
    assert a["logit"] - a["presence 1"] == pytest.approx(1.0, abs=1e-4)
    assert a["logit"] - a["frequency 0.5"] == pytest.approx(1.0, abs=1e-4)
    in_row = rows["In"]
    assert in_row["generated"] == 1 and in_row["logit"] - in_row["frequency 0.5"] == pytest.approx(0.5, abs=1e-4)
    top = {p: dist.with_params(presence_penalty=p).top(1)[0].token for p in (1.0, 1.6)}
    assert top == {1.0: "A", 1.6: "Where"}


def test_07_the_whole_poems_under_the_additive_penalties(lm, loop):
    """07 §4: a negative presence penalty loops harder, presence 2 breaks the loop, frequency 0.5 brings the refrain
    back with new endings, frequency 1 ends the poem early."""
    base = smolkit.repeated_ngram_fraction(loop[0].token_ids)

    def poem(**changes):
        return smolkit.generate(lm, POEM, GREEDY.replace(**changes))

    assert smolkit.repeated_ngram_fraction(poem(presence_penalty=-1.0).token_ids) > base
    assert smolkit.repeated_ngram_fraction(poem(presence_penalty=2.0).token_ids) < 0.1
    refrain = poem(frequency_penalty=0.5).text
    endings = {line for line in refrain.splitlines() if line.startswith("Abe a sea of ")}
    assert len(endings) >= 2
    early = poem(frequency_penalty=1.0)
    assert early.samples[0].finish_reason == "stop" and len(early.token_ids) < 48
