"""SQuAD v1.1: parsing, windowed featurization, span decoding, official scoring, SpanModel."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras.config import AdapterConfig
from adapter_keras.methods import apply_method, parameter_report
from adapter_keras.networks import MASKED_LOGIT, SpanModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks import squad
from adapter_keras.tasks.squad import SquadAnswer, SquadExample, SquadFeaturizer
from adapter_keras.train import squad as span_training

CONTEXT = "The cat sat on the mat. The dog won the game, and the team lost!"
LONG_CONTEXT = ("The market rose and the stock price fell. The party won the vote. "
                "The band will play music. The team lost the game but the dog sat on the mat.")


def squad_document():
  """A tiny SQuAD v1.1 document: two articles, a dev-style question with three answers."""
  return {"version": "1.1", "data": [
      {"title": "Pets", "paragraphs": [{"context": CONTEXT, "qas": [
          {"id": "q-cat", "question": "where the cat sat ?",
           "answers": [{"text": "on the mat", "answer_start": CONTEXT.index("on the mat")},
                       {"text": "the mat", "answer_start": CONTEXT.index("the mat")},
                       {"text": "mat", "answer_start": CONTEXT.index("mat")}]},
          {"id": "q-dog", "question": "who won the game ?",
           "answers": [{"text": "The dog", "answer_start": CONTEXT.index("The dog")}]}]}]},
      {"title": "News", "paragraphs": [{"context": LONG_CONTEXT, "qas": [
          {"id": "q-band", "question": "what will the band play ?",
           "answers": [{"text": "music", "answer_start": LONG_CONTEXT.index("music")}]}]}]},
  ]}


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("squad") / "dev-v1.1.json"
  path.write_text(json.dumps(squad_document()), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def preprocessor(tiny_hf_dir):
  return BertPreprocessor(f"{tiny_hf_dir}/vocab.txt", max_seq_length=24)


def test_load_squad_json(squad_file):
  examples = squad.load_squad_json(squad_file)
  assert [e.id for e in examples] == ["q-cat", "q-dog", "q-band"]
  assert examples[0].title == "Pets" and examples[0].context == CONTEXT
  assert examples[0].answers[1] == SquadAnswer("the mat", 15)
  assert examples[2].question == "what will the band play ?"
  assert [e.id for e in squad.load_squad_json(squad_file, max_examples=2)] == ["q-cat", "q-dog"]


def test_parse_errors(tmp_path):
  with pytest.raises(ValueError, match="not SQuAD JSON"):
    squad.parse_squad({"version": "1.1"})
  document = squad_document()
  document["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = True
  with pytest.raises(ValueError, match="q-cat is unanswerable.*v1.1"):
    squad.parse_squad(document)
  document = squad_document()
  document["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = len(CONTEXT) - 2
  with pytest.raises(ValueError, match="q-dog: answer 'The dog' at .* outside"):
    squad.parse_squad(document)
  bad = tmp_path / "bad.json"
  bad.write_text("{", encoding="utf-8")
  with pytest.raises(ValueError, match="not valid JSON"):
    squad.load_squad_json(str(bad))


def test_tokenize_with_offsets_matches_preprocessor_and_maps_to_characters(preprocessor):
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor)
  text = "Über  Café cats, sat!"  # non-ASCII (2-byte characters), double space, word pieces
  [(ids, starts, ends)] = featurizer.tokenize_with_offsets([text])
  np.testing.assert_array_equal(ids, preprocessor.tokenize(tf.constant([text]))[0].numpy())
  assert [text[s:e] for s, e in zip(starts, ends)] == ["Über", "Café", "cat", "s", ",", "sat", "!"]


def test_featurize_single_window_layout(preprocessor):
  example = squad.parse_squad(squad_document())[1]  # "who won the game ?" / "The dog"
  featurizer = SquadFeaturizer(preprocessor.vocab_file, max_seq_length=32, doc_stride=8)
  features = featurizer.featurize([example])
  assert len(features) == 1
  question_ids = preprocessor.tokenize(tf.constant([example.question]))[0].numpy()
  context_ids = preprocessor.tokenize(tf.constant([CONTEXT]))[0].numpy()
  expected = np.concatenate([[preprocessor.cls_id], question_ids, [preprocessor.sep_id], context_ids,
                             [preprocessor.sep_id]])
  length = len(expected)
  np.testing.assert_array_equal(features.input_word_ids[0, :length], expected)
  assert (features.input_word_ids[0, length:] == preprocessor.pad_id).all()
  assert features.input_mask[0].tolist() == [1] * length + [0] * (32 - length)
  offset = len(question_ids) + 2
  assert features.input_type_ids[0].tolist() == [0] * offset + [1] * (length - offset) + [0] * (32 - length)
  assert (features.token_char_start[0, :offset] == squad.NOT_IN_CONTEXT).all()
  assert (features.token_char_start[0, length - 1:] == squad.NOT_IN_CONTEXT).all()
  start, end = features.start_positions[0], features.end_positions[0]
  assert CONTEXT[features.token_char_start[0, start]:features.token_char_end[0, end]] == "The dog"
  assert features.token_is_max_context[0, offset:length - 1].all()
  assert features.example_index.tolist() == [0]


def test_featurize_truncates_the_question(preprocessor):
  example = SquadExample("q", "the cat the dog the mat the band", CONTEXT, ())
  featurizer = SquadFeaturizer(preprocessor.vocab_file, max_seq_length=32, max_query_length=3)
  features = featurizer.featurize([example])
  the_cat_the = preprocessor.tokenize(tf.constant(["the cat the"]))[0].numpy().tolist()
  expected = [preprocessor.cls_id] + the_cat_the + [preprocessor.sep_id]
  assert features.input_word_ids[0, :5].tolist() == expected
  assert features.start_positions.tolist() == [0] and features.end_positions.tolist() == [0]


def test_featurize_stride_windows(preprocessor):
  example = squad.parse_squad(squad_document())[2]  # long context, answer "music"
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor, doc_stride=4, max_query_length=8)
  features = featurizer.featurize([example])
  num_context = len(preprocessor.tokenize(tf.constant([LONG_CONTEXT]))[0])
  offset = 2 + len(preprocessor.tokenize(tf.constant([example.question]))[0])
  window = 24 - offset - 1
  # Windows start 0, 4, 8, ... until one reaches the last context token.
  expected_windows = 1 + -(-(num_context - window) // 4)
  assert len(features) == expected_windows > 3
  starts = features.token_char_start[:, offset]
  context_tokens = featurizer.tokenize_with_offsets([LONG_CONTEXT])[0][1]
  np.testing.assert_array_equal(starts, context_tokens[np.arange(expected_windows) * 4])
  assert features.token_char_end[-1][features.input_mask[-1] == 1][-2] == len(LONG_CONTEXT)
  music = LONG_CONTEXT.index("music")
  music_token = int(np.nonzero(context_tokens == music)[0][0])
  for f in range(len(features)):
    inside = 4 * f <= music_token < 4 * f + window
    if inside:
      position = features.start_positions[f]
      assert position == features.end_positions[f] == offset + music_token - 4 * f
      characters = slice(features.token_char_start[f, position], features.token_char_end[f, position])
      assert LONG_CONTEXT[characters] == "music"
    else:
      assert features.start_positions[f] == features.end_positions[f] == 0
  # Every context token is the max-context token of exactly one window.
  counts = np.zeros(num_context, int)
  for f in range(len(features)):
    for i in np.nonzero(features.token_is_max_context[f])[0]:
      counts[4 * f + i - offset] += 1
  assert counts.tolist() == [1] * num_context


def test_featurize_rejects_a_question_that_fills_the_sequence(preprocessor):
  featurizer = SquadFeaturizer(preprocessor.vocab_file, max_seq_length=10, max_query_length=8)
  featurizer.featurize([SquadExample("short", "the dog", CONTEXT, ())])
  with pytest.raises(ValueError, match="question long: max_seq_length 10 leaves no room for context"):
    featurizer.featurize([SquadExample("long", "the cat the dog the mat the band", CONTEXT, ())])


# ------------------------------------------------------------------- decoding


def logits_for(features, spans, base=-5.0):
  """Start/end logits with the given {(feature, start, end): (start logit, end logit)}."""
  start = np.full(features.input_word_ids.shape, base, np.float32)
  end = np.full(features.input_word_ids.shape, base, np.float32)
  for (f, s, e), (start_value, end_value) in spans.items():
    start[f, s], end[f, e] = start_value, end_value
  return start, end


def test_decode_picks_the_best_valid_span(preprocessor):
  examples = squad.parse_squad(squad_document())[:2]
  features = SquadFeaturizer.from_preprocessor(preprocessor, doc_stride=8).featurize(examples)
  answered = [f for f in range(len(features)) if features.start_positions[f]]
  dog = [f for f in answered if features.example_index[f] == 1][0]
  cat = [f for f in answered if features.example_index[f] == 0][0]
  s_dog, e_dog = features.start_positions[dog], features.end_positions[dog]
  s_cat, e_cat = features.start_positions[cat], features.end_positions[cat]
  start, end = logits_for(features, {
      (dog, s_dog, e_dog): (3.0, 3.0),
      (dog, 0, 0): (9.0, 9.0),  # [CLS] is never an answer
      (dog, e_dog, s_dog): (0.0, 0.0),  # end before start: invalid
      (cat, s_cat, e_cat): (2.0, 2.0),
      (cat, 1, 1): (8.0, 8.0),  # a question token: not context
  })
  candidates = squad.decode_spans(examples, features, start, end, n_best_size=5, max_answer_length=5)
  assert squad.best_answers(candidates) == {"q-cat": "on the mat", "q-dog": "The dog"}
  dog_candidates = candidates["q-dog"]
  assert dog_candidates[0].score == 6.0
  assert dog_candidates[0].start_char == CONTEXT.index("The dog")
  assert [c.score for c in dog_candidates] == sorted([c.score for c in dog_candidates], reverse=True)
  assert len({c.text for c in dog_candidates}) == len(dog_candidates) <= 5
  assert sum(c.probability for c in dog_candidates) == pytest.approx(1.0)


def test_decode_respects_max_answer_length_and_max_context(preprocessor):
  example = squad.parse_squad(squad_document())[2]
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor, doc_stride=4, max_query_length=8)
  features = featurizer.featurize([example])
  music = [f for f in range(len(features)) if features.start_positions[f]]
  assert len(music) >= 2  # the answer sits in several overlapping windows
  owner = [f for f in music if features.token_is_max_context[f, features.start_positions[f]]]
  other = [f for f in music if f not in owner]
  assert len(owner) == 1 and other
  spans = {(f, features.start_positions[f], features.start_positions[f]): (5.0, 5.0) for f in music}
  # A higher score on the same token where it lacks max context is ignored ...
  spans[(other[0], features.start_positions[other[0]], features.start_positions[other[0]])] = (9.0, 9.0)
  start, end = logits_for(features, spans)
  candidates = squad.decode_spans([example], features, start, end, n_best_size=3)
  assert candidates["q-band"][0].text == "music" and candidates["q-band"][0].score == 10.0
  # ... and a 2-token limit drops a 3-token span ("will play music"); one window here.
  features = SquadFeaturizer(preprocessor.vocab_file, max_seq_length=64).featurize([example])
  assert len(features) == 1
  s = features.start_positions[0]
  start, end = logits_for(features, {(0, s - 2, s): (9.0, 1.0)})
  start[0, s] = 1.0
  best = squad.best_answers(squad.decode_spans([example], features, start, end, max_answer_length=2))
  assert best == {"q-band": "music"}
  best = squad.best_answers(squad.decode_spans([example], features, start, end, max_answer_length=3))
  assert best == {"q-band": "will play music"}


def test_decode_without_valid_span_and_shape_errors(preprocessor):
  example = squad.parse_squad(squad_document())[1]
  features = SquadFeaturizer.from_preprocessor(preprocessor).featurize([example])
  start, end = logits_for(features, {})
  start[:], end[:] = 0.0, 0.0
  candidates = squad.decode_spans([example], features, start, end, max_answer_length=0)
  assert candidates == {"q-dog": []} and squad.best_answers(candidates) == {"q-dog": ""}
  with pytest.raises(ValueError, match="do not match"):
    squad.decode_spans([example], features, start[:, :3], end, n_best_size=2)


# -------------------------------------------------------------------- scoring


@pytest.mark.parametrize("text,normalized", [
    ("The Cat!", "cat"),
    ("  A  dog, the end. ", "dog end"),
    ("An apple a day", "apple day"),
    ("the-cat", "thecat"),  # punctuation goes first, so "the" is no longer a word
    ("Theory of the atom", "theory of atom"),
    ("Denver Broncos", "denver broncos"),
    ("\"Saint Bernadette Soubirous\"", "saint bernadette soubirous"),
])
def test_normalize_answer(text, normalized):
  assert squad.normalize_answer(text) == normalized


def test_exact_match_and_f1():
  assert squad.exact_match_score("The Denver Broncos!", "denver broncos") == 1.0
  assert squad.exact_match_score("Denver", "Denver Broncos") == 0.0
  # prediction [cat, sat], truth [cat, sat, on, mat]: precision 1, recall 1/2 -> F1 2/3.
  assert squad.f1_score("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
  # repeated tokens count once per match: [a, b, b] vs [b]: 1 common, P 1/3, R 1 -> 1/2.
  assert squad.f1_score("x y y", "y") == pytest.approx(0.5)
  assert squad.f1_score("", "cat") == 0.0 and squad.f1_score("dog", "cat") == 0.0


def test_evaluate_takes_the_max_over_ground_truths():
  examples = squad.parse_squad(squad_document())
  predictions = {"q-cat": "mat", "q-dog": "a dog"}  # q-band unanswered -> scores 0
  result = squad.evaluate(examples, predictions)
  # q-cat: EM 1 against "mat"; q-dog: F1 with "the dog" -> [dog] vs [dog] = 1, EM 1 after normalising.
  assert result == pytest.approx({"exact_match": 200 / 3, "f1": 200 / 3})
  result = squad.evaluate(examples, {"q-cat": "the cat sat on the mat", "q-dog": "dog", "q-band": "music"})
  # q-cat best F1: [cat, sat, on, mat] vs [on, mat] -> P 1/2, R 1 -> 2/3.
  assert result == pytest.approx({"exact_match": 200 / 3, "f1": 100 * (2 / 3 + 1 + 1) / 3})


# ------------------------------------------------------------------ SpanModel


@pytest.fixture(scope="module")
def span_model(tiny_hf_dir):
  pretrained = load_encoder(tiny_hf_dir, AdapterConfig(size=4), adapter_seed=0)
  return SpanModel(pretrained.encoder, head_seed=0, name="span_model").build_with_dummy_inputs()


def test_span_model_outputs_and_config(span_model, preprocessor):
  inputs = preprocessor(tf.constant(["the cat sat on the mat", "the dog"]))
  outputs = span_model(inputs)
  assert span_model.task_type == "span"
  assert set(outputs) == {"start_logits", "end_logits"}
  for logits in outputs.values():
    assert logits.dtype == tf.float32 and logits.shape == inputs["input_word_ids"].shape
    masked = logits.numpy()[inputs["input_mask"].numpy() == 0]
    assert masked.size and (masked == MASKED_LOGIT).all()
    assert (logits.numpy()[inputs["input_mask"].numpy() == 1] > -100).all()
  clone = SpanModel.from_config(span_model.get_config())
  assert isinstance(clone, SpanModel) and clone.head_seed == 0 and clone.name == "span_model"
  clone.build_with_dummy_inputs().set_weights(span_model.get_weights())
  np.testing.assert_allclose(clone(inputs)["end_logits"], outputs["end_logits"], atol=1e-5)
  # The head reads no pooled vector, so even full fine-tuning leaves the pooler frozen.
  apply_method(clone, "full")
  trainable = {v.name for v in clone.trainable_variables}
  assert not any("pooler" in n for n in trainable) and any("word_embeddings" in n for n in trainable)


def test_span_model_adapter_method_trains_and_answers(tiny_hf_dir, squad_file):
  pretrained = load_encoder(tiny_hf_dir, AdapterConfig(size=4), adapter_seed=0)
  model = SpanModel(pretrained.encoder, dropout_rate=0.0, head_seed=0).build_with_dummy_inputs()
  apply_method(model, "adapter")
  trainable = {v.name.split("/", 1)[1] for v in model.trainable_variables}
  assert {"head/kernel:0", "head/bias:0"} <= trainable
  assert all("adapter" in n or "layer_norm" in n or n.startswith("head/") for n in trainable)
  assert not any("pooler" in n for n in trainable)
  report = parameter_report(model)
  assert report.head_params == 32 * 2 + 2 and report.trained_params == sum(
      int(np.prod(v.shape)) for v in model.trainable_variables)
  frozen_before = [v.numpy().copy() for v in model.non_trainable_variables]
  head_before = model.head.kernel.numpy().copy()

  examples = squad.load_squad_json(squad_file)
  preprocessor = BertPreprocessor(pretrained.vocab_file, max_seq_length=24)
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor, doc_stride=8, max_query_length=8)
  features = featurizer.featurize(examples)

  def score():
    start, end = span_training.predict_spans(model, features)
    answers = squad.best_answers(squad.decode_spans(examples, features, start, end, max_answer_length=5))
    return squad.evaluate(examples, answers)["f1"]

  untrained_f1 = score()
  span_training.compile_span_model(model, tf_keras.optimizers.Adam(0.02))
  history = model.fit(span_training.make_span_dataset(features, batch_size=16, shuffle=True, seed=0),
                      epochs=60, verbose=0)
  losses = history.history["loss"]
  assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
  assert not np.allclose(model.head.kernel.numpy(), head_before)
  for before, variable in zip(frozen_before, model.non_trainable_variables):
    np.testing.assert_array_equal(before, variable.numpy())
  assert score() >= untrained_f1 + 50.0
