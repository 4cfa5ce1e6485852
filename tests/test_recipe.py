"""Configs check themselves when built: a bad option fails at once, as InvalidInput naming its field."""

import pytest

from prototok import EncodeConfig, Recipe, encode_config
from prototok.errors import InvalidInput
from prototok.recipe import COMPACT, PAPER, TUNED, Arrangement, Method, ShareMode


@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("lr", float("nan")), ("max_steps", 0), ("max_steps", 2.5), ("seeds", 0), ("seeds", True),
    ("beta1", 1.0), ("beta2", -0.1), ("weight_decay", -1.0), ("warmup_steps", -1), ("min_lr_ratio", 1.5),
    ("init_scale", 0.0), ("lr_e_scale", -1.0), ("halve_every", -1), ("restart_every", -2), ("ste_steps", -1),
    ("margin", 100.0), ("loss_margin", -0.5), ("seed", "7"), ("sink", 1), ("init", "uniform"),
    ("init_e", "uniform"), ("schedule", "linear"),
])
def test_a_bad_recipe_field_is_named(field, value):
    with pytest.raises(InvalidInput, match=field):
        Recipe(**{field: value})
    with pytest.raises(InvalidInput, match=field):  # with_ builds a new recipe: checked the same way
        TUNED.with_(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("method", "greedy"), ("arrangement", "e_m"), ("share", "shared"), ("chunk_tokens", 0), ("mem_tokens", 0),
    ("group_size", -1), ("max_batch_rows", 0), ("storage", "float64"), ("rank", -1),
])
def test_a_bad_config_field_is_named(field, value):
    with pytest.raises(InvalidInput, match=field):
        EncodeConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("share", ShareMode.SHARED_M), ("share", "frozen_m"), ("group_size", 2), ("arrangement", Arrangement.PAIRS),
])
def test_mem_refuses_the_one_step_options_it_would_ignore(field, value):
    with pytest.raises(InvalidInput, match=field):
        EncodeConfig(method=Method.AUTOREGRESSIVE, **{field: value})


def test_values_are_coerced_and_good_configs_pass():
    cfg = EncodeConfig(recipe=PAPER.with_(init="embedding", schedule="cosine"), method="one_step",
                       arrangement="e_mN-1", share="shared_e", group_size=2)
    assert (cfg.recipe.init.value, cfg.arrangement, cfg.share) == ("embedding", Arrangement.E_MN1, ShareMode.SHARED_E)
    assert cfg.share.joint and not ShareMode.FROZEN_M.joint
    assert EncodeConfig(method="autoregressive", mem_tokens=3).method is Method.AUTOREGRESSIVE
    assert TUNED.with_(stop_accuracy=2.0).stop_accuracy == 2.0  # above 1: never stop early


def test_encode_config_takes_a_requests_options():
    cfg = encode_config("paper", max_steps=40, seeds=3, seed=5, lr=0.2, margin=0.5, sink=True,
                        arrangement="pairs", chunk_tokens=16, storage="int8")
    assert cfg.recipe == PAPER.with_(max_steps=40, seeds=3, seed=5, lr=0.2, margin=0.5, sink=True)
    assert (cfg.arrangement, cfg.chunk_tokens, cfg.storage, cfg.rank) == (Arrangement.PAIRS, 16, "int8", 0)
    assert encode_config() == EncodeConfig(recipe=TUNED)
    assert encode_config(max_steps=9000, max_steps_limit=500).recipe.max_steps == 500
    assert encode_config(max_steps_limit=500).recipe.max_steps == min(TUNED.max_steps, 500)
    compact = encode_config(compact=True)
    assert (compact.storage, compact.rank) == (COMPACT["storage"], COMPACT["rank"])


def test_a_servers_default_storage_applies_only_where_storage_options_do():
    assert (encode_config(default_storage="int8", default_rank=16).storage,) == ("int8",)
    for options in ({"method": "autoregressive"}, {"share": "shared_m"}):
        cfg = encode_config(default_storage="int8", default_rank=16, **options)
        assert (cfg.storage, cfg.rank) == ("float32", 0)
    assert encode_config(rank=4, default_storage="int8").storage == "float32"  # a request that names one


@pytest.mark.parametrize("options, field", [
    ({"recipe": "fast"}, "recipe"), ({"compact": True, "rank": 4}, "compact"), ({"lr": -1.0}, "lr"),
    ({"method": "autoregressive", "share": "shared_m"}, "share"), ({"method": "autoregressive", "group_size": 3},
                                                                   "group_size"),
    ({"storage": "int8", "method": "autoregressive"}, "storage"),
])
def test_encode_config_names_the_bad_option(options, field):
    with pytest.raises(InvalidInput, match=field):
        encode_config(**options)


@pytest.mark.parametrize("options, field", [
    ({"method": "autoregressive", "share": "shared_e"}, "share"),
    ({"method": "autoregressive", "group_size": 2}, "group_size"),
    ({"method": "autoregressive", "arrangement": "halves"}, "arrangement"),
])
def test_the_api_answers_options_it_used_to_ignore_with_422_naming_the_field(options, field):
    """The API builds its config with the same encode_config; InvalidInput carries status 422."""
    from app.schemas import EncodeOptions
    from service.settings import ServiceSettings

    with pytest.raises(InvalidInput, match=field) as err:
        EncodeOptions(**options).to_config(ServiceSettings())
    assert err.value.status == 422 and err.value.code == "invalid_input"
