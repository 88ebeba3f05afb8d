import pytest

from adapter_keras.config import AdapterConfig


def test_defaults_are_the_papers():
  c = AdapterConfig()
  assert (c.size, c.init_std, c.activation, c.positions, c.layers) == (64, 1e-2, "gelu", "both", None)


@pytest.mark.parametrize("kwargs", [
    dict(size=0), dict(size=-3), dict(size=2.5), dict(size=True), dict(size=[8, 0, -1]),
    dict(init_std=0), dict(init_std=-1e-3), dict(activation="softmaxx"), dict(positions="middle"),
    dict(layers=[-1]),
])
def test_invalid_values_are_rejected(kwargs):
  with pytest.raises(ValueError):
    AdapterConfig(**kwargs)


def test_per_layer_sizes_and_layer_selection():
  c = AdapterConfig(size=[4, 0, 16])
  assert [c.size_for_layer(i) for i in range(3)] == [4, 0, 16]
  c = AdapterConfig(size=8, layers=[1])
  assert [c.size_for_layer(i) for i in range(3)] == [0, 8, 0]
  with pytest.raises(ValueError, match="3 sizes"):
    AdapterConfig(size=[1, 2, 3]).validate_for(2)
  with pytest.raises(ValueError, match="out of range"):
    AdapterConfig(layers=[5]).validate_for(2)


@pytest.mark.parametrize("positions,attention,ffn", [
    ("both", True, True), ("attention", True, False), ("ffn", False, True)])
def test_positions(positions, attention, ffn):
  c = AdapterConfig(positions=positions)
  assert (c.use_attention_adapter, c.use_ffn_adapter) == (attention, ffn)


def test_dict_round_trip():
  c = AdapterConfig(size=[2, 4], init_std=1e-3, activation="relu", positions="ffn", layers=[0, 1])
  assert AdapterConfig.from_dict(c.to_dict()) == c
  with pytest.raises(ValueError, match="Unknown"):
    AdapterConfig.from_dict({"sise": 3})
