"""The builders of the official benchmarks, on miniature archives in the official
layouts (tests/fake_archives.py): split counts from the list files, label mapping,
ignore pixels, metadata, archives as downloaded or extracted, reuse, missing
archives, and bad examples failing (naming the file) or skipped and reported."""
import subprocess
import sys

import numpy as np
import pytest

from jaxseg.data import datasets
from jaxseg.errors import DatasetNotFoundError, InputDataError
from tests import fake_archives as fake
from tests.conftest import ROOT, load_config

pytest.importorskip("tensorflow")


def prepare(name, tmp_path, archives, extracted=(), skip=False):
  """Writes `archives` into tmp_path/manual, prepares `name` from them; returns
  {split: [records]} read back without the builder class."""
  from jaxseg.prepare import prepare as run
  manual = fake.write(archives, tmp_path / "manual", extracted)
  run(name, str(tmp_path / "tfds"), str(manual), skip)
  return read(name, tmp_path)


def read(name, tmp_path):
  builder = datasets.load(name, str(tmp_path / "tfds"))
  out = {}
  for split in builder.info.splits:
    source = datasets.source(builder, split)
    out[split] = [source[i] for i in range(len(source))]
  return out, builder


def by_name(records):
  return {r["file_name"].decode() if isinstance(r["file_name"], bytes) else r["file_name"]: r
          for r in records}


def test_voc_aug_splits_labels_and_border(tmp_path, capsys):
  archives, expected = fake.make_voc_aug()
  splits, builder = prepare("voc_aug", tmp_path, archives)
  out = capsys.readouterr().out
  assert "train_aug" in out and "6 examples" in out  # the summary printed at the end
  for split in ("train", "val", "train_aug"):
    assert sorted(by_name(splits[split])) == sorted(expected[split]), split
  for split in splits.values():
    for name, record in by_name(split).items():
      assert record["image"].shape[2] == 3 and record["image"].dtype == np.uint8
      np.testing.assert_array_equal(record["label"][..., 0], expected["labels"][name])
  border = by_name(splits["train"])[expected["train"][0]]["label"][0, :, 0]
  assert (border == 255).all()  # the VOC border band stays ignore
  meta = builder.info.metadata
  assert len(meta["classes"]) == 21 and meta["classes"][15] == "person"
  assert meta["palette"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]


def test_voc_aug_extracted_archives_and_second_run_reuses(tmp_path, capsys):
  import io
  from PIL import Image
  archives, expected = fake.make_voc_aug()
  grey = io.BytesIO()  # a greyscale JPEG, as a few COCO and ImageNet images are
  Image.fromarray(np.full((20, 24), 77, np.uint8)).save(grey, "JPEG")
  voc = archives["VOCtrainval_11-May-2012.tar"]
  voc[f"VOCdevkit/VOC2012/JPEGImages/{expected['val'][0]}.jpg"] = grey.getvalue()
  voc[f"VOCdevkit/VOC2012/SegmentationClass/{expected['val'][0]}.png"] = fake.palette_png(
      expected["labels"][expected["val"][0]][:20, :24] * 0)
  splits, _ = prepare("voc_aug", tmp_path, archives, extracted=tuple(archives))
  assert sorted(by_name(splits["train_aug"])) == expected["train_aug"]
  grey = by_name(splits["val"])[expected["val"][0]]["image"]
  assert grey.shape == (20, 24, 3) and (np.abs(grey.astype(int) - 77) <= 2).all()
  capsys.readouterr()
  from jaxseg.prepare import prepare as run
  run("voc_aug", str(tmp_path / "tfds"), "")  # no archives needed any more
  assert "already prepared" in capsys.readouterr().out


def test_voc_aug_records_feed_the_training_pipeline(tmp_path):
  from jaxseg.data import pipeline
  archives, _ = fake.make_voc_aug()
  prepare("voc_aug", tmp_path, archives)
  config = load_config("deeplabv3_voc")
  config.input.crop_size, config.train.batch_size = (16, 16), 2
  source = datasets.source(datasets.load("voc_aug", str(tmp_path / "tfds")), "train_aug")
  batch = pipeline.train_dataset(config, source)[0]
  assert batch["image"].shape == (2, 16, 16, 3) and batch["label"].shape == (2, 16, 16)
  assert set(np.unique(batch["label"])) <= {0, 1, 7, 15, 20, 255}


@pytest.mark.parametrize("coarse", [False, True])
def test_cityscapes_label_ids_to_train_ids(tmp_path, coarse):
  archives, expected = fake.make_cityscapes(coarse)
  name = "cityscapes/coarse" if coarse else "cityscapes"
  splits, builder = prepare(name, tmp_path, archives, extracted=tuple(archives) if coarse else ())
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  table = np.full(34, 255)
  for label_id, train_id in {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}.items():
    table[label_id] = train_id
  for split, records in splits.items():
    for name_, record in by_name(records).items():
      assert record["image"].shape == (16, 32, 3)
      want = table[expected["label_ids"][name_]] if split != "test" else np.full((16, 32), 255)
      np.testing.assert_array_equal(record["label"][..., 0], want)
  assert builder.info.metadata["palette"][0] == [128, 64, 128]  # road, the official colour
  assert builder.info.metadata["classes"][18] == "bicycle"


def test_ade20k_reduce_zero_label(tmp_path):
  archives, expected = fake.make_ade20k()
  splits, builder = prepare("ade20k", tmp_path, archives)
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  for records in splits.values():
    for name, record in by_name(records).items():
      raw = expected["labels"][name]
      want = np.where(raw == 0, 255, raw.astype(int) - 1)
      np.testing.assert_array_equal(record["label"][..., 0], want)
  assert len(builder.info.metadata["classes"]) == 150
  assert builder.info.metadata["classes"][149] == "flag"
  # The ADE20K eval protocol of the configs: short side 512, padded to the canvas.
  from jaxseg.data import pipeline
  config = load_config("mcibi_ade20k")
  batch = next(pipeline.eval_batches(config, datasets.source(builder, "val"), 2))
  assert batch["image"].shape == (2, 2048, 2048, 3) and batch["label"].shape == (2, 2048, 2048)
  assert sorted(map(tuple, batch["label_size"].tolist())) == [(19, 26), (20, 26)]  # as stored
  assert sorted(map(tuple, batch["image_size"].tolist())) == [(512, 666), (512, 701)]  # short side 512
  labelled = (batch["label"] != 255).any(axis=2).sum(axis=1)  # rows holding labels
  assert sorted(labelled.tolist()) == [19, 20]


@pytest.mark.parametrize("config", ["59", "60"])
def test_pascal_context_59_and_60(tmp_path, config):
  archives, expected = fake.make_pascal_context()
  name = f"pascal_context/{config}"
  splits, builder = prepare(name, tmp_path, archives, extracted=("trainval.tar.gz",))
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  # Full-context ids: 2 aeroplane (first of the 59), 9 bag, 458 wood (last); 0, 1, 100
  # and 459 are unlabelled or outside the 59.
  if config == "59":
    table = {0: 255, 1: 255, 2: 0, 9: 1, 100: 255, 458: 58, 459: 255}
  else:
    table = {0: 0, 1: 0, 2: 1, 9: 2, 100: 0, 458: 59, 459: 0}
  for records in splits.values():
    for name_, record in by_name(records).items():
      want = np.vectorize(table.get)(expected["maps"][name_])
      np.testing.assert_array_equal(record["label"][..., 0], want)
  classes = builder.info.metadata["classes"]
  assert len(classes) == int(config) and classes[-1] == "wood"
  assert (classes[0] == "background") == (config == "60")
  palette = builder.info.metadata["palette"]
  assert len(palette) == int(config) and palette[-1] == fake.voc_palette(60)[59]  # wood alike in both
  if config == "60":  # the datasets.py short name resolves to the default config (59)
    with pytest.raises(DatasetNotFoundError):
      datasets.dataset_dir("pascal_context", str(tmp_path / "tfds"))
  else:
    assert datasets.dataset_dir("pascal_context", str(tmp_path / "tfds")).parent.name == "59"


@pytest.mark.parametrize("nested_zip", [True, False])
def test_coco_panoptic_segments_semantic_and_instances(tmp_path, nested_zip):
  archives, expected = fake.make_coco_panoptic(nested_zip)
  splits, builder = prepare("coco_panoptic", tmp_path, archives,
                            extracted=() if nested_zip else ("panoptic_annotations_trainval2017.zip",))
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  meta = builder.info.metadata
  assert meta["category_ids"] == [1, 3, 92, 184] and meta["isthing"] == [True, True, False, False]
  assert meta["classes"] == ["person", "car", "banner", "tree-merged"]
  for record in splits["val"]:
    image_id = int(record["image_id"])
    np.testing.assert_array_equal(record["label"][..., 0], expected["semantic"][image_id])
    seg = record["segments"]
    assert np.asarray(seg["id"]).tolist() == [5, 775, 131073, 9]
    assert np.asarray(seg["category"]).tolist() == [0, 1, 3, 2] and np.asarray(seg["iscrowd"]).tolist() == [0, 1, 0, 0]
    assert np.asarray(seg["bbox"]).shape == (4, 4) and np.asarray(seg["area"]).tolist() == [48, 48, 24, 24]
    rgb = record["panoptic"].astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    for sid, cat in zip(seg["id"], seg["category"]):  # id PNG + segments give the semantics back
      assert (record["label"][..., 0][ids == sid] == cat).all()
    inst = record["instances"]
    assert np.asarray(inst["category"]).tolist() == [0, 1] and np.asarray(inst["iscrowd"]).tolist() == [0, 1]
    assert inst["segmentation"][1].decode().startswith('{"size"')


@pytest.mark.parametrize("extracted", [False, True])
def test_imagenet_pssl_class_labels(tmp_path, extracted):
  archives, expected = fake.make_imagenet()  # extracted: a folder of the class tars
  splits, builder = prepare("imagenet_pssl", tmp_path, archives, extracted=tuple(archives) if extracted else ())
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  wnids = builder.info.metadata["classes"]
  assert wnids == expected["wnids"]  # leaves only, sorted
  for records in splits.values():
    for name, record in by_name(records).items():
      assert wnids[int(record["label"])] == expected["class_of"][name], name
      assert record["image"].ndim == 3


def test_missing_archives_fail_before_any_work_naming_each(tmp_path):
  (tmp_path / "manual").mkdir()
  fake.write({"benchmark.tgz": {"x": b""}}, tmp_path / "manual")
  out = subprocess.run([sys.executable, "-m", "jaxseg.prepare", "voc_aug", "--manual_dir",
                        str(tmp_path / "manual"), "--data_dir", str(tmp_path / "tfds")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  assert "VOCtrainval_11-May-2012.tar" in out.stderr and "host.robots.ox.ac.uk" in out.stderr
  assert str(tmp_path / "manual") in out.stderr and "missing: VOCtrainval_11-May-2012.tar" in out.stderr
  assert not (tmp_path / "tfds" / "voc_aug").exists()  # nothing was started


@pytest.mark.parametrize("name", ["cityscapes/coarse", "ade20k", "pascal_context/60", "coco_panoptic",
                                  "imagenet_pssl"])
def test_missing_archives_name_every_file(tmp_path, name):
  from jaxseg.prepare import prepare as run
  with pytest.raises(DatasetNotFoundError) as e:
    run(name, str(tmp_path / "tfds"), str(tmp_path))
  for file, _, where in datasets.ARCHIVES[name]:
    assert file in str(e.value) and where in str(e.value)
  assert str(tmp_path) in str(e.value)


def test_not_prepared_error_names_the_command_and_archives(tmp_path):
  with pytest.raises(DatasetNotFoundError) as e:
    datasets.dataset_dir("cityscapes", str(tmp_path))
  message = str(e.value)
  assert "python -m jaxseg.prepare cityscapes --manual_dir" in message
  assert "leftImg8bit_trainvaltest.zip" in message and "gtFine_trainvaltest.zip" in message


# Bad examples: (what is broken, how to break the VOC fake, file named in the error).
def _truncate_image(voc, sbd, ids):
  name = f"VOCdevkit/VOC2012/JPEGImages/{ids[0]}.jpg"
  voc[name] = fake.truncated(voc[name])
  return name


def _resize_label(voc, sbd, ids):
  name = f"VOCdevkit/VOC2012/SegmentationClass/{ids[0]}.png"
  voc[name] = fake.palette_png(np.zeros((5, 5), np.uint8))
  return name


def _out_of_range_label(voc, sbd, ids):
  name = f"VOCdevkit/VOC2012/SegmentationClass/{ids[0]}.png"
  label = np.zeros((30, 40), np.uint8)
  label[3, 3] = 21  # a 22nd class
  voc[f"VOCdevkit/VOC2012/JPEGImages/{ids[0]}.jpg"] = fake.jpeg(30, 40)
  voc[name] = fake.palette_png(label)
  return name


def _corrupt_mat(voc, sbd, ids):
  name = "benchmark_RELEASE/dataset/cls/2008_000005.mat"  # SBD-only image "f"
  sbd[name] = b"MATLAB 5.0 garbage"
  return name


def _truncated_label(voc, sbd, ids):
  name = f"VOCdevkit/VOC2012/SegmentationClass/{ids[0]}.png"
  voc[name] = fake.truncated(voc[name])
  return name


BREAKAGES = [_truncate_image, _resize_label, _out_of_range_label, _corrupt_mat, _truncated_label]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__[1:])
def test_bad_example_fails_naming_the_file(tmp_path, breakage):
  archives, expected = fake.make_voc_aug()
  bad = breakage(archives["VOCtrainval_11-May-2012.tar"], archives["benchmark.tgz"], expected["train"])
  with pytest.raises(InputDataError, match="--skip_bad_examples") as e:
    prepare("voc_aug", tmp_path, archives)
  assert bad in str(e.value)
  assert not (tmp_path / "tfds" / "voc_aug" / "1.0.0").exists()


def test_skip_bad_examples_leaves_them_out_and_reports_them(tmp_path, capsys):
  archives, expected = fake.make_voc_aug()
  voc, sbd = archives["VOCtrainval_11-May-2012.tar"], archives["benchmark.tgz"]
  bad = [_truncate_image(voc, sbd, expected["train"][0:]), _resize_label(voc, sbd, expected["train"][1:]),
         _corrupt_mat(voc, sbd, None)]
  splits, builder = prepare("voc_aug", tmp_path, archives, skip=True)
  assert sorted(by_name(splits["train"])) == expected["train"][2:]
  assert len(splits["train_aug"]) == len(expected["train_aug"]) - 3
  report = (tmp_path / "tfds" / "voc_aug" / "1.0.0" / "skipped_examples.txt").read_text()
  out = capsys.readouterr().out
  assert "Skipped 5 bad example(s)" in out  # 2 in train, the same 2 + the .mat in train_aug
  for name in bad:
    assert name in report and name in out
  assert report.count("\n") == 5


def test_bad_labels_of_other_datasets_name_the_file(tmp_path):
  archives, _ = fake.make_cityscapes()
  name = "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
  archives["gtFine_trainvaltest.zip"][name] = fake.png(np.zeros((16, 32, 3), np.uint8))  # a colour PNG
  with pytest.raises(InputDataError, match="mode RGB") as e:
    prepare("cityscapes", tmp_path / "c", archives)
  assert name in str(e.value)
  archives, _ = fake.make_ade20k()
  name = "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
  archives["ADEChallengeData2016.zip"][name] = fake.png(np.full((19, 26), 151, np.uint8))
  with pytest.raises(InputDataError, match=r"\[151\]") as e:
    prepare("ade20k", tmp_path / "a", archives)
  assert name in str(e.value)


def test_eval_resize_to_short_side_leaves_the_label_as_stored():
  """ADE20K protocol: the image to short side 512 (up or down), long side <= 2048; the
  label stays at its stored size on its own canvas, padded with ignore."""
  import cv2

  from jaxseg.data import transforms
  rng = np.random.default_rng(0)
  label = np.repeat(np.repeat(rng.integers(0, 150, (3, 4)), 100, 0), 100, 1).astype(np.uint8)
  image = np.repeat(label[..., None], 3, -1)  # the image shows its label
  out = transforms.eval_transform({"image": image, "label": label[..., None]}, (1024, 1024), 255,
                                  short_side=512, long_side=2048, label_size=(320, 420))
  assert tuple(out["image_size"]) == (512, 683) and tuple(out["label_size"]) == (300, 400)
  np.testing.assert_array_equal(out["label"][:300, :400], label)
  assert (out["label"][300:] == 255).all() and (out["label"][:, 400:] == 255).all()
  assert (out["image"][512:] == 0).all() and (out["image"][:, 683:] == 0).all()
  shown = cv2.resize(label, (683, 512), interpolation=cv2.INTER_NEAREST)
  assert (out["image"][:512, :683, 0] == shown).mean() > 0.97  # bilinear blurs block edges
  out = transforms.eval_transform({"image": image, "label": label[..., None]}, (1024, 1024), 255, long_side=512,
                                  label_size=(300, 400))
  assert tuple(out["image_size"]) == (384, 512)
  plain = transforms.eval_transform({"image": image, "label": label[..., None]}, (320, 400), 255)
  assert set(plain) == {"image", "label"} and plain["label"].shape == (320, 400)  # off: as before


def test_coco_segment_id_missing_from_segments_info_names_the_png(tmp_path):
  import json
  archives, _ = fake.make_coco_panoptic()
  files = archives["panoptic_annotations_trainval2017.zip"]
  pan = json.loads(files["annotations/panoptic_train2017.json"])
  pan["annotations"][0]["segments_info"].pop(0)  # segment 5 is in the PNG only
  files["annotations/panoptic_train2017.json"] = json.dumps(pan).encode()
  with pytest.raises(InputDataError, match=r"segment ids \[5\] are not in segments_info") as e:
    prepare("coco_panoptic", tmp_path, archives)
  assert "panoptic_train2017/000000000101.png" in str(e.value)


def test_imagenet_skips_a_truncated_image_inside_a_class_tar(tmp_path, capsys):
  import io
  import tarfile
  archives, expected = fake.make_imagenet()
  train = archives["ILSVRC2012_img_train.tar"]
  inner = io.BytesIO()
  with tarfile.open(fileobj=inner, mode="w") as t:
    for i, data in enumerate([fake.truncated(fake.jpeg(40, 40)), fake.jpeg(10, 12)]):
      info = tarfile.TarInfo(f"n01440764_{i}.JPEG")
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))
  train["n01440764.tar"] = inner.getvalue()
  splits, _ = prepare("imagenet_pssl", tmp_path, archives, extracted=("ILSVRC2012_img_val.tar",), skip=True)
  assert len(splits["train"]) == expected["counts"]["train"] - 1
  assert "ILSVRC2012_img_train.tar:n01440764.tar:n01440764_0.JPEG" in capsys.readouterr().out


def test_cityscapes_panoptic_segments_from_instance_ids(tmp_path):
  """cityscapesScripts' rules: id = label id x 1000 + k for instances, < 1000 for stuff
  and for crowd groups of a thing class (iscrowd), classes not evaluated void; the
  records feed the instance targets."""
  from jaxseg.config import base_config
  from jaxseg.data import instances
  from jaxseg.panoptic_quality import rgb_to_id
  archives, expected = fake.make_cityscapes_panoptic()
  splits, builder = prepare("cityscapes/panoptic", tmp_path, archives)
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  meta = builder.info.metadata
  assert sum(meta["isthing"]) == 8 and len(meta["isthing"]) == 19 and meta["category_ids"][13] == 26
  config = base_config()
  config.dataset.num_classes = 19
  config.input.eval_size = (16, 32)
  for records in splits.values():
    for stem, r in by_name(records).items():
      s = {k: np.asarray(v) for k, v in r["segments"].items()}
      got = sorted(zip(s["id"].tolist(), s["category"].tolist(), s["iscrowd"].tolist(), s["area"].tolist()))
      assert got == expected["segments"][stem]
      ids = rgb_to_id(r["panoptic"])
      assert set(np.unique(ids).tolist()) == {0} | {g[0] for g in got}
      assert (ids[8:12, 16:] == 0).all() and (ids[12:, 20:28] == 0).all()  # trailer, caravan, unlabelled: void
      table = dict(zip(s["id"].tolist(), s["category"].tolist()))
      np.testing.assert_array_equal(r["label"][..., 0], np.vectorize(lambda v: table.get(v, 255))(ids))
      assert sorted(np.asarray(r["instances"]["category"]).tolist()) == [11, 12, 13, 13, 13]
      out = instances.eval_targets(r, config, np.array(meta["isthing"]), "things", panoptic=True)
      assert out["instance_valid"].sum() == 5 and out["instance_iscrowd"].sum() == 1
      np.testing.assert_array_equal(out["panoptic"], ids)


def test_ade20k_panoptic_stuff_then_instances(tmp_path):
  """Mask2Former's rules: stuff segments from the semantic map, instances (R class, G
  number) pasted over them; thing pixels without an instance and "other" are void."""
  from jaxseg.panoptic_quality import rgb_to_id
  archives, expected = fake.make_ade20k_panoptic()
  splits, builder = prepare("ade20k_panoptic", tmp_path, archives)
  assert {s: len(r) for s, r in splits.items()} == expected["counts"]
  meta = builder.info.metadata
  assert sum(meta["isthing"]) == 100 and len(meta["isthing"]) == 150 and meta["isthing"][12]  # person
  for records in splits.values():
    for stem, r in by_name(records).items():
      s = {k: np.asarray(v) for k, v in r["segments"].items()}
      assert sorted(zip(s["id"].tolist(), s["category"].tolist(), s["area"].tolist())) == expected["segments"][stem]
      assert not s["iscrowd"].any()
      ids = rgb_to_id(r["panoptic"])
      assert (ids[10:, 18:] == 0).all() and (ids[0:3, 20:] == 0).all() and (ids[5:10, :4] == 20009).all()
      assert sorted(np.asarray(r["instances"]["category"]).tolist()) == [12, 12, 19, 20]


def test_ade20k_panoptic_missing_instance_archive_names_it(tmp_path):
  from jaxseg.prepare import prepare as run
  archives, _ = fake.make_ade20k_panoptic()
  manual = fake.write({"ADEChallengeData2016.zip": archives["ADEChallengeData2016.zip"]}, tmp_path / "manual")
  with pytest.raises(DatasetNotFoundError, match=r"missing: annotations_instance.tar(.|\n)*sceneparsing.csail"):
    run("ade20k_panoptic", str(tmp_path / "tfds"), str(manual), False)


def test_ade20k_panoptic_instance_of_two_classes_names_the_file(tmp_path):
  archives, _ = fake.make_ade20k_panoptic()
  name = "annotations_instance/validation/ADE_val_00000001.png"
  r = np.zeros((20, 24), np.uint8)
  r[:, :12], r[:, 12:] = 4, 9
  archives["annotations_instance.tar"][name] = fake.png(np.stack([r, np.full_like(r, 3), r * 0], -1))
  with pytest.raises(InputDataError, match=rf"{name}: instance 3 has class values \(R\) \[4, 9\]"):
    prepare("ade20k_panoptic", tmp_path, archives)


def test_imagenet_pssl_released_labels_become_the_1001_class_label(tmp_path, capsys):
  imagenet = fake.make_imagenet()
  released, expected = fake.make_pssl_released(imagenet)
  archives = {**imagenet[0], **released}
  splits, builder = prepare("imagenet_pssl/released", tmp_path, archives, extracted=("pssl2.1_consensus.tar",))
  assert list(splits) == ["train"] and len(splits["train"]) == 5  # the one unlabelled image left out
  assert "5 labelled train images; 1 without a released label left out" in capsys.readouterr().out
  wnids = imagenet[1]["wnids"]
  assert builder.info.metadata["classes"] == wnids + ["background"]
  records = by_name(splits["train"])
  assert sorted(records) == sorted(expected["masks"]) and expected["left_out"] not in records
  for name, record in records.items():
    cls = wnids.index(imagenet[1]["class_of"][name])
    assert int(record["class"]) == cls and record["label"].dtype == np.uint16
    np.testing.assert_array_equal(record["label"][..., 0], np.where(expected["masks"][name] == 1, cls, 1000))
    assert record["image"].shape[:2] == record["label"].shape[:2]
