"""Component configs: model.head / model.neck / model.aux_heads take the keys their
modules define, and nothing else; loss.weights names the outputs; configs saved with
the flat keys of earlier versions are translated on load."""
import json

import ml_collections
import pytest

from jaxseg.config import (aux_head, check_keys, check_override_keys, from_flat_keys, head, neck, tiny_variant,
                           upgrade)
from jaxseg.errors import ConfigError
from jaxseg.models.heads import aspp, mcibi, psp
from jaxseg.models.segmentor import HEADS, NECKS
from tests.conftest import ROOT, load_config


def test_a_component_takes_its_modules_keys_and_defaults():
  assert head("psp", bins=(1, 3)) == {"name": "psp", **psp.CONFIG, "bins": (1, 3)}
  assert neck("") == {"name": ""} and neck("jpu")["channels"] == 512
  assert aux_head(channels=8) == {"feature": "c3", "channels": 8, "num_convs": 1, "concat_input": False,
                                  "dilation": 1}
  for name, module in {**HEADS, **NECKS}.items():  # each defines its keys and builds from them
    assert isinstance(module.CONFIG, dict) and callable(module.build), name
  assert all(isinstance(module.LOSSES, dict) for module in HEADS.values())
  # No head reads another's keys: MCIBI's host ASPP has its own rates.
  assert "aspp_rates" in mcibi.CONFIG and not set(aspp.CONFIG) & {"cam_variant", "bins"}


@pytest.mark.parametrize("make, match", [
    (lambda: head("psp", bin=(1, 2)), r"unknown config key 'model.head.bin' \(keys of 'psp': .*did you mean 'bins'"),
    (lambda: head("aspp", bins=(1, 2)), r"'model.head.bins' \(keys of 'aspp'"),
    (lambda: head("danett"), r"model.head.name: unknown head 'danett' .*did you mean 'danet'"),
    (lambda: neck("jpu", chanels=8), r"'model.neck.chanels'.*did you mean 'channels'"),
    (lambda: aux_head(dilaton=2), r"'model.aux_heads.<name>.dilaton'.*did you mean 'dilation'"),
])
def test_an_unknown_component_key_names_it_and_the_near_match(make, match):
  with pytest.raises(ConfigError, match=match):
    make()


def test_check_keys_validates_each_component_against_its_own_keys():
  config = load_config("pspnet_voc", "tiny")
  check_keys(config)
  config.model.head.rates = (6, 12, 18)  # ASPP's key on the PSP head
  with pytest.raises(ConfigError, match="'model.head.rates' \\(keys of 'psp'"):
    check_keys(config)
  config = load_config("pspnet_voc", "tiny")
  config.model.aux_heads.aux.chanels = 8
  with pytest.raises(ConfigError, match="model.aux_heads.aux.chanels.*did you mean 'channels'"):
    check_keys(config)
  config = load_config("pspnet_voc", "tiny")
  config.loss.weights = dict(seg=1.0, aux="0.4")
  with pytest.raises(ConfigError, match="loss.weights.aux must be a number"):
    check_keys(config)


def test_command_line_keys_are_those_of_the_config_files_components():
  config = load_config("pspnet_voc", "tiny")
  check_override_keys(["--config.model.head.bins=1,3", "--config.loss.weights.aux=0.2",
                       "--config.model.aux_heads.aux.channels=8"], config)
  with pytest.raises(ConfigError, match="'model.head.bin'.*did you mean 'bins'"):
    check_override_keys(["--config.model.head.bin=1,3"], config)
  with pytest.raises(ConfigError, match="'loss.weights.pam'"):  # PSPNet has no output "pam"
    check_override_keys(["--config.loss.weights.pam=1"], config)


def test_tiny_variant_shrinks_the_widths_the_head_has():
  config = tiny_variant(load_config("mcibi_ade20k"))
  assert (config.model.head.channels, config.model.head.transform_channels) == (16, 8)
  assert config.model.aux_heads.aux.channels == 8
  config = tiny_variant(load_config("fastfcn_ade20k"))
  assert config.model.neck.channels == 16 and config.model.head.channels == 16


def flat(model, **loss):
  return ml_collections.ConfigDict({"model": model, "loss": loss})


def test_flat_keys_of_an_earlier_version_move_into_the_components():
  saved = json.loads((ROOT / "tests" / "data" / "workdir_v0" / "config.json").read_text())
  config = upgrade(ml_collections.ConfigDict(saved))
  check_keys(config)
  m = config.model
  assert m.head.to_dict() == head("aspp", channels=8, rates=[6, 12, 18])
  assert m.neck.to_dict() == {"name": ""}
  assert m.aux_heads.to_dict() == {"aux": aux_head(channels=4)}
  assert (m.attention_blocked_threshold, m.attention_block_size) == (2 ** 26, 512)
  assert not {"decode_head", "head_channels", "aspp_rates", "psp_bins", "danet_block_size", "aux_head"} & set(m)
  assert config.loss.weights.seg == 1.0 and config.loss.weights.aux == 0.4
  assert "aux_weight" not in config.loss and config.loss.ohem_thresh == 0.7

  # Keys move into the head that read them: MCIBI's ASPP rates and the attention
  # blocks it shared with DANet; the other heads' keys are dropped.
  config = from_flat_keys(flat(dict(decode_head="mcibi", aspp_rates=(3, 6, 9), mcibi_channels=32,
                                    danet_block_size=64, psp_bins=(1, 2), head_channels=7, neck="")))
  assert config.model.head.to_dict() == head("mcibi", aspp_rates=(3, 6, 9), channels=32)
  assert config.model.attention_block_size == 64 and config.model.aux_heads.to_dict() == {"aux": aux_head()}
  # STDC: aux_head and aux_channels are its decoder's own heads; no FCN aux head.
  config = from_flat_keys(flat(dict(decode_head="stdc", aux_head=False, aux_channels=32, head_channels=64,
                                    stdc_classifier_bias=True, neck=""), aux16_weight=0.5, detail_weight=2.0))
  assert config.model.head.to_dict() == head("stdc", channels=64, aux_heads=False, aux_channels=32,
                                             classifier_bias=True)
  assert config.model.aux_heads.to_dict() == {} and config.loss.weights.to_dict() == {"seg": 1.0, "aux16": 0.5,
                                                                                      "detail": 2.0}
  # FastFCN: neck + jpu_channels; mmseg's fcn-d6: the auxiliary head's dilation.
  config = from_flat_keys(flat(dict(decode_head="fcn", neck="jpu", jpu_channels=16, fcn_dilation=6, aux_dilation=6,
                                    aux_channels=8, aux_head=True)))
  assert config.model.neck.to_dict() == {"name": "jpu", "channels": 16}
  assert config.model.head.dilation == 6 and config.model.aux_heads.aux.to_dict() == aux_head(channels=8, dilation=6)
