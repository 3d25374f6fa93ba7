"""PQ, SQ and RQ of panoptic predictions in COCO's panoptic format, from anywhere.

  python -m jaxseg.tools.panoptic_eval --gt_json panoptic_val2017.json --gt_dir panoptic_val2017 \
      --pred_json predictions.json --pred_dir predictions [--output pq.json] [--workers 8]

Both sides are COCO panoptic files: a JSON {"annotations": [{"image_id", "file_name",
"segments_info": [{"id", "category_id", "iscrowd", ...}]}], "categories": [{"id",
"name", "isthing"}]} (categories are read from the ground truth) and a folder of PNGs
whose pixels hold segment ids, id = R + 256 G + 256^2 B (0: unlabelled). Every
ground-truth image needs a prediction (by image_id); predictions of other images are
ignored. The rules are COCO's (see jaxseg.panoptic_quality). Prints the All / Things /
Stuff table and one row per class; --output writes the same numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys

import numpy as np
from PIL import Image

from jaxseg.errors import InputDataError, UserError
from jaxseg.panoptic_quality import PanopticQuality, format_table, image_stats, rgb_to_id

EXIT_USER_ERROR = 2  # as jaxseg.main: bad input, one line on stderr


def read_json(path, what):
  if not os.path.isfile(path):
    raise InputDataError(f"{what} {path} does not exist")
  try:
    with open(path) as f:
      data = json.load(f)
  except ValueError as e:
    raise InputDataError(f"{what} {path} is not valid JSON ({e})") from None
  if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
    raise InputDataError(f"{what} {path} has no \"annotations\" list (COCO's panoptic format)")
  for i, ann in enumerate(data["annotations"]):
    missing = [k for k in ("image_id", "file_name", "segments_info") if k not in ann]
    if missing:
      raise InputDataError(f"{what} {path}: annotation {i} lacks {', '.join(missing)}")
  return data


def read_categories(gt, path):
  categories = gt.get("categories")
  if not isinstance(categories, list) or not categories:
    raise InputDataError(f"ground-truth JSON {path} has no \"categories\" list")
  for c in categories:
    if "id" not in c or "isthing" not in c:
      raise InputDataError(f"ground-truth JSON {path}: category {c!r} needs \"id\" and \"isthing\"")
  return categories


def read_ids(folder, ann, side):
  """The segment-id map of one annotation's PNG."""
  path = os.path.join(folder, ann["file_name"])
  if not os.path.isfile(path):
    raise InputDataError(f"image {ann['image_id']}: {side} PNG {path} does not exist")
  try:
    with Image.open(path) as image:
      rgb = np.asarray(image.convert("RGB"))
  except OSError as e:
    raise InputDataError(f"image {ann['image_id']}: {side} PNG {path} cannot be read ({e})") from None
  return rgb_to_id(rgb)


def pairs(gt, pred, pred_path):
  """(ground-truth annotation, predicted annotation) for every ground-truth image."""
  by_image = {}
  for ann in pred["annotations"]:
    if ann["image_id"] in by_image:
      raise InputDataError(f"prediction JSON {pred_path} has two annotations of image {ann['image_id']}")
    by_image[ann["image_id"]] = ann
  missing = [a["image_id"] for a in gt["annotations"] if a["image_id"] not in by_image]
  if missing:
    raise InputDataError(f"prediction JSON {pred_path} has no annotation of image {missing[0]}"
                         + (f" (nor of {len(missing) - 1} more)" if len(missing) > 1 else ""))
  return [(a, by_image[a["image_id"]]) for a in gt["annotations"]]


def one_image(job):
  (gt_ann, pred_ann), gt_dir, pred_dir, category_ids = job
  where = f"image {gt_ann['image_id']} ({gt_ann['file_name']})"
  return image_stats(read_ids(gt_dir, gt_ann, "ground-truth"), gt_ann["segments_info"],
                     read_ids(pred_dir, pred_ann, "predicted"), pred_ann["segments_info"], category_ids, where)


def evaluate(gt_json, gt_dir, pred_json, pred_dir, workers=1) -> dict:
  """The PQ result (jaxseg.panoptic_quality.scores) of COCO panoptic files."""
  for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
    if not os.path.isdir(folder):
      raise InputDataError(f"{what} folder {folder} does not exist")
  gt, pred = read_json(gt_json, "ground-truth JSON"), read_json(pred_json, "prediction JSON")
  pq = PanopticQuality(read_categories(gt, gt_json))
  jobs = [(p, gt_dir, pred_dir, pq.category_ids) for p in pairs(gt, pred, pred_json)]
  if workers > 1 and len(jobs) > 1:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:  # spawn: no inherited JAX state
      for stats in pool.imap(one_image, jobs, chunksize=16):
        pq.merge(stats, images=1)
  else:
    for job in jobs:
      pq.merge(one_image(job), images=1)
  result = pq.result()
  result["images"] = pq.images
  return result


def json_safe(value):
  """NaN (a mean over no category) -> null: strict JSON has no NaN."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [json_safe(v) for v in value]
  return value


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m jaxseg.tools.panoptic_eval",
                                   description="PQ / SQ / RQ of COCO-format panoptic predictions.")
  parser.add_argument("--gt_json", required=True, help="ground-truth JSON in COCO's panoptic format")
  parser.add_argument("--gt_dir", required=True, help="folder of the ground-truth PNGs")
  parser.add_argument("--pred_json", required=True, help="predicted JSON in COCO's panoptic format")
  parser.add_argument("--pred_dir", required=True, help="folder of the predicted PNGs")
  parser.add_argument("--output", default="", help="also write the results here as JSON")
  parser.add_argument("--workers", type=int, default=1, help="processes reading and scoring images")
  args = parser.parse_args(argv)
  try:
    result = evaluate(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, args.workers)
  except UserError as e:
    print(f"jaxseg: error: {e}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  print(f"panoptic quality of {result['images']} images (%)")
  print(format_table(result))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(json_safe(result), f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
