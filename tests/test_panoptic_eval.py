"""python -m jaxseg.tools.panoptic_eval on COCO-format panoptic files written here."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxseg.panoptic_quality import PanopticQuality, id_to_rgb
from jaxseg.tools import panoptic_eval
from tests.conftest import ROOT

CATEGORIES = [{"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
              {"id": 7, "name": "car", "isthing": 1, "supercategory": "vehicle"},
              {"id": 184, "name": "sky", "isthing": 0, "supercategory": "sky"}]


def segments(ids, categories, crowd=()):
  """COCO segments_info of an id map: area and bbox (x, y, w, h) from its pixels."""
  out = []
  for sid, cat in categories.items():
    ys, xs = np.nonzero(ids == sid)
    out.append({"id": sid, "category_id": cat, "iscrowd": int(sid in crowd), "area": int(ys.size),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
  return out


def images():
  """Two images: (image_id, gt ids, gt segments, pred ids, pred segments)."""
  gt_a = np.full((10, 12), 300, np.int64)  # sky; ids above 255 use the G channel
  gt_a[2:6, 1:5], gt_a[5:9, 7:11], gt_a[0, :] = 70001, 2, 0  # a person, a car, a void row
  pred_a = np.full_like(gt_a, 5)
  pred_a[2:6, 1:5] = 6  # the person exactly
  pred_a[5:9, 7:9] = 8  # half of the car: IoU 1/2, no match
  pred_a[0:2, 8:10] = 9  # a person half on void, half on sky: a FP
  gt_b = np.full((8, 9), 40, np.int64)
  gt_b[1:5, 1:6] = 41  # a crowd of people
  pred_b = np.full_like(gt_b, 11)
  pred_b[1:4, 1:4] = 12  # a person inside the crowd: not a FP
  return [(139, gt_a, segments(gt_a, {300: 184, 70001: 1, 2: 7}), pred_a, segments(pred_a, {5: 184, 6: 1, 8: 7, 9: 1})),
          (285, gt_b, segments(gt_b, {40: 184, 41: 1}, crowd={41}), pred_b, segments(pred_b, {11: 184, 12: 1}))]


def write(tmp_path, cases):
  """gt.json + gt/, pred.json + pred/ in COCO's panoptic format."""
  for side, ids_at, segments_at in (("gt", 1, 2), ("pred", 3, 4)):
    (tmp_path / side).mkdir(exist_ok=True)
    annotations = []
    for case in cases:
      name = f"{case[0]:012d}.png"
      Image.fromarray(id_to_rgb(case[ids_at])).save(tmp_path / side / name)
      annotations.append({"image_id": case[0], "file_name": name, "segments_info": case[segments_at]})
    doc = {"annotations": annotations, "categories": CATEGORIES}
    if side == "gt":
      doc["images"] = [{"id": c[0], "file_name": f"{c[0]:012d}.jpg", "height": c[1].shape[0], "width": c[1].shape[1]}
                       for c in cases]
    (tmp_path / f"{side}.json").write_text(json.dumps(doc))
  return ["--gt_json", str(tmp_path / "gt.json"), "--gt_dir", str(tmp_path / "gt"),
          "--pred_json", str(tmp_path / "pred.json"), "--pred_dir", str(tmp_path / "pred")]


def test_command_end_to_end(tmp_path):
  cases = images()
  args = write(tmp_path, cases)
  out = subprocess.run([sys.executable, "-m", "jaxseg.tools.panoptic_eval", *args,
                        "--output", str(tmp_path / "pq.json")], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "pq.json").read_text())

  # by hand: person TP (IoU 1) + FP; car FN + FP; sky TP twice
  # sky A: 76 px, predicted 92 px of which 10 on the void row: IoU = 74 / (92 + 76 - 74 - 10)
  sky_a = 74 / 84
  sky_b = 52 / 63  # the predicted person inside the crowd is not sky either
  person, car, sky = result["per_class"]
  assert (person["tp"], person["fp"], person["fn"], person["pq"]) == (1, 1, 0, pytest.approx(1 / 1.5))
  assert (car["tp"], car["fp"], car["fn"], car["pq"]) == (0, 1, 1, 0.0)
  assert (sky["tp"], sky["fp"], sky["fn"]) == (2, 0, 0) and sky["sq"] == pytest.approx((sky_a + sky_b) / 2)
  assert result["pq_stuff"] == pytest.approx((sky_a + sky_b) / 2) and result["n"] == 3 and result["images"] == 2
  assert result["pq"] == pytest.approx((1 / 1.5 + 0 + (sky_a + sky_b) / 2) / 3)

  direct = PanopticQuality(CATEGORIES)
  for image_id, *maps in cases:
    direct.update(*maps, image_id=image_id)
  assert {k: v for k, v in result.items() if k != "images"} == direct.result()

  lines = out.stdout.splitlines()
  row = lambda label: next(line for line in lines if line.startswith(label)).split("|")[1].split()
  assert row("All") == [f"{100 * result['pq']:.1f}", f"{100 * result['sq']:.1f}", f"{100 * result['rq']:.1f}", "3"]
  assert row("Stuff")[-1] == "1" and row("person")[:3] == ["66.7", "100.0", "66.7"]
  assert f"wrote {tmp_path / 'pq.json'}" in out.stdout


def test_worker_processes_give_the_same_result(tmp_path):
  args = write(tmp_path, [(1000 * i + case[0], *case[1:]) for i in range(3) for case in images()])
  paths = args[1::2]
  one = panoptic_eval.evaluate(*paths)
  assert panoptic_eval.evaluate(*paths, workers=2) == one and one["images"] == 6


def errors(tmp_path, capsys, cases, edit=None):
  args = write(tmp_path, cases)
  if edit:
    edit(tmp_path)
  with pytest.raises(SystemExit) as e:
    panoptic_eval.main(args)
  assert e.value.code == panoptic_eval.EXIT_USER_ERROR
  return capsys.readouterr().err


def test_bad_input_names_the_image_and_segment(tmp_path, capsys):
  cases = images()
  unlisted = [cases[0], cases[1][:4] + (cases[1][4][:1],)]  # segment 12 is in the PNG only
  err = errors(tmp_path, capsys, unlisted)
  assert "image 285 (000000000285.png), prediction: segment id 12 is in the PNG but not in the JSON" in err

  unknown = [cases[0][:4] + ([dict(s, category_id=99) if s["id"] == 8 else s for s in cases[0][4]],), cases[1]]
  err = errors(tmp_path, capsys, unknown)
  assert "image 139 (000000000139.png), prediction: segment 8 has unknown category_id 99" in err

  err = errors(tmp_path, capsys, cases, lambda d: (d / "pred" / "000000000285.png").unlink())
  assert f"image 285: predicted PNG {tmp_path / 'pred' / '000000000285.png'} does not exist" in err

  def drop_prediction(d):
    doc = json.loads((d / "pred.json").read_text())
    doc["annotations"] = doc["annotations"][:1]
    (d / "pred.json").write_text(json.dumps(doc))
  err = errors(tmp_path, capsys, cases, drop_prediction)
  assert "has no annotation of image 285" in err

  err = errors(tmp_path, capsys, cases, lambda d: (d / "gt.json").write_text("{"))
  assert f"ground-truth JSON {tmp_path / 'gt.json'} is not valid JSON" in err
