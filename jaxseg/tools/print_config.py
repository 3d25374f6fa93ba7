"""The fully resolved config of a config file, after command-line overrides.

  python -m jaxseg.tools.print_config --config configs/deeplabv3_voc.py --config.train.steps=1000
  python -m jaxseg.tools.print_config --config configs/pspnet_ade20k.py:tiny --changed
  python -m jaxseg.tools.print_config --config configs/quickstart.py --format=yaml

JSON (the default) is the same document training writes to WORKDIR/config.json.
`--changed` lists only the keys whose value differs from jaxseg.config.base_config(),
as `key = value` lines: what the config file and the overrides set.
"""
from __future__ import annotations

import json


def changed_keys(config):
  """{dotted key: value} of the keys whose value differs from base_config's."""
  from jaxseg.checkpoint import _flatten
  from jaxseg.config import base_config
  base = _flatten(json.loads(base_config().to_json()))
  return {k: v for k, v in _flatten(json.loads(config.to_json_best_effort())).items() if base.get(k) != v}


def render(config, fmt="json", changed=False):
  if changed:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in changed_keys(config).items())
  if fmt == "yaml":
    return str(config).rstrip()
  return config.to_json_best_effort(indent=2)


def define_flags():
  from absl import flags
  flags.DEFINE_enum("format", "json", ["json", "yaml"], "Output format.")
  flags.DEFINE_bool("changed", False, "Only the keys that differ from the base config.")


def main(argv):
  from absl import flags

  from jaxseg.main import resolved_config
  print(render(resolved_config(argv), flags.FLAGS.format, flags.FLAGS.changed))


if __name__ == "__main__":
  from jaxseg.main import run
  define_flags()
  run(main)
