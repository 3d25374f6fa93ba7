"""Command-line tools around training, each `python -m jaxseg.tools.NAME --help`:
benchmark, flops, visualize, print_config, browse_dataset, panoptic_eval."""
