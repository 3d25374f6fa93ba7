"""Figures drawn with numpy and Pillow only (no plotting library): label colouring,
panoptic overlays with segment outlines, titled image grids with a class legend, line
plots and a confusion-matrix heatmap.
Every function returns a uint8 RGB array."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (128, 128, 128)
# Line colours of plots (Tableau 10).
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def font(size=12):
  return ImageFont.load_default(size=size)


def colorize(label, palette):
  """(H, W) class ids -> (H, W, 3) colours of the (256, 3) `palette` (255 = ignore)."""
  return np.asarray(palette, np.uint8)[np.asarray(label, np.int64).clip(0, 255)]


def error_map(pred, label, ignore_index=255):
  """Black where the prediction is right, red where it is wrong, white where ignored."""
  out = np.zeros((*label.shape, 3), np.uint8)
  out[(pred != label) & (label != ignore_index)] = (220, 30, 30)
  out[label == ignore_index] = WHITE
  return out


def _text_width(draw, text, f):
  box = draw.textbbox((0, 0), text, font=f)
  return box[2] - box[0]


def legend(names, palette, width, size=12):
  """Rows of colour swatches with class names, wrapped to `width` pixels."""
  f = font(size)
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  items = [(name, tuple(int(c) for c in palette[i])) for i, name in enumerate(names)]
  cells = [size + 6 + _text_width(probe, name, f) + 14 for name, _ in items]
  rows, x = [[]], 6
  for cell, item in zip(cells, items):
    if x + cell > width and rows[-1]:
      rows.append([])
      x = 6
    rows[-1].append((x, item))
    x += cell
  img = Image.new("RGB", (width, 6 + len(rows) * (size + 8)), WHITE)
  draw = ImageDraw.Draw(img)
  for r, row in enumerate(rows):
    y = 4 + r * (size + 8)
    for x, (name, color) in row:
      draw.rectangle([x, y, x + size, y + size], fill=color, outline=BLACK)
      draw.text((x + size + 5, y), name, fill=BLACK, font=f)
  return np.asarray(img)


def grid(rows, titles, pad=4, size=13):
  """Panels (same-size RGB arrays) in rows, with a column title above each column."""
  h, w = rows[0][0].shape[:2]
  head = size + 8
  canvas = Image.new("RGB", (pad + len(titles) * (w + pad), head + len(rows) * (h + pad)), WHITE)
  draw = ImageDraw.Draw(canvas)
  f = font(size)
  for c, title in enumerate(titles):
    draw.text((pad + c * (w + pad) + max(0, (w - _text_width(draw, title, f)) // 2), 3), title,
              fill=BLACK, font=f)
  for r, row in enumerate(rows):
    for c, panel in enumerate(row):
      canvas.paste(Image.fromarray(np.asarray(panel, np.uint8)), (pad + c * (w + pad), head + r * (h + pad)))
  return np.asarray(canvas)


def stack(*images):
  """Images one above the other, left-aligned on white."""
  width = max(i.shape[1] for i in images)
  out = np.full((sum(i.shape[0] for i in images), width, 3), 255, np.uint8)
  y = 0
  for i in images:
    out[y:y + i.shape[0], :i.shape[1]] = i
    y += i.shape[0]
  return out


def _ticks(lo, hi, n=5):
  """About n round tick values covering [lo, hi]."""
  if hi <= lo:
    hi = lo + 1.0
  raw = (hi - lo) / n
  mag = 10 ** np.floor(np.log10(raw))
  step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
  return np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step)


def _fmt(v):
  return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"


def line_plot(series, title, xlabel, ylabel, size=(640, 400), ylim=None):
  """A line plot of `series` = {name: (xs, ys)} with axes, ticks and a legend.
  Returns (image, plotted) where `plotted` maps each name to the (xs, ys) drawn."""
  w, h = size
  left, right, top, bottom = 64, 16, 30, 44
  img = Image.new("RGB", size, WHITE)
  draw = ImageDraw.Draw(img)
  f, small = font(13), font(11)
  plotted = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items() if len(x)}
  xs = np.concatenate([x for x, _ in plotted.values()]) if plotted else np.zeros(1)
  ys = np.concatenate([y[np.isfinite(y)] for _, y in plotted.values()]) if plotted else np.zeros(1)
  ys = ys if ys.size else np.zeros(1)
  x0, x1 = float(xs.min()), float(xs.max())
  y0, y1 = ylim if ylim else (float(ys.min()), float(ys.max()))
  if x1 == x0:
    x0, x1 = x0 - 1, x1 + 1
  if y1 == y0:
    y0, y1 = y0 - 0.5, y1 + 0.5
  if not ylim:  # a margin, so that the extremes do not sit on the frame
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)
  px = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)
  py = lambda y: h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
  draw.rectangle([left, top, w - right, h - bottom], outline=BLACK)
  for t in _ticks(y0, y1):
    draw.line([left - 4, py(t), left, py(t)], fill=BLACK)
    draw.line([left + 1, py(t), w - right - 1, py(t)], fill=(230, 230, 230))
    label = _fmt(t)
    draw.text((left - 7 - _text_width(draw, label, small), py(t) - 6), label, fill=BLACK, font=small)
  for t in _ticks(x0, x1, 6):
    draw.line([px(t), h - bottom, px(t), h - bottom + 4], fill=BLACK)
    label = _fmt(t)
    draw.text((px(t) - _text_width(draw, label, small) / 2, h - bottom + 6), label, fill=BLACK, font=small)
  draw.text(((w - _text_width(draw, title, f)) / 2, 6), title, fill=BLACK, font=f)
  draw.text(((w - _text_width(draw, xlabel, small)) / 2, h - 18), xlabel, fill=BLACK, font=small)
  draw.text((4, top - 14), ylabel, fill=BLACK, font=small)
  for i, (name, (x, y)) in enumerate(plotted.items()):
    color = COLORS[i % len(COLORS)]
    pts = [(px(a), py(b)) for a, b in zip(x, y) if np.isfinite(b)]
    if len(pts) > 1:
      draw.line(pts, fill=color, width=2)
    for p in pts:
      draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
    ly = top + 6 + 16 * i
    draw.line([w - right - 120, ly + 6, w - right - 100, ly + 6], fill=color, width=3)
    draw.text((w - right - 95, ly), name, fill=BLACK, font=small)
  return np.asarray(img), plotted


def heatmap(matrix, names, title, cell=36):
  """A row-normalised confusion matrix (rows = ground truth) as white-to-blue cells
  with the percentage in each, class names on both axes."""
  m = np.asarray(matrix, float)
  k = len(names)
  rows = m / np.maximum(m.sum(1, keepdims=True), 1)
  f, small = font(13), font(max(8, min(12, cell // 3)))
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  label_w = max(_text_width(probe, n, small) for n in names) + 10
  top = label_w + 28
  caption = "predicted (columns) vs ground truth (rows), % of each row"
  width = max(label_w + k * cell + 20, _text_width(probe, caption, small) + 12, _text_width(probe, title, f) + 12)
  img = Image.new("RGB", (width, top + k * cell + 30), WHITE)
  draw = ImageDraw.Draw(img)
  draw.text((6, 4), title, fill=BLACK, font=f)
  for i in range(k):
    draw.text((label_w - 6 - _text_width(draw, names[i], small), top + i * cell + cell / 2 - 6), names[i],
              fill=BLACK, font=small)
    col = Image.new("RGB", (label_w, 16), WHITE)
    ImageDraw.Draw(col).text((2, 1), names[i], fill=BLACK, font=small)
    col = col.rotate(90, expand=True)
    img.paste(col, (label_w + i * cell + cell // 2 - 8, top - label_w - 2))
    for j in range(k):
      v = rows[i, j]
      color = tuple(int(255 - v * (255 - c)) for c in (8, 48, 107))
      x, y = label_w + j * cell, top + i * cell
      draw.rectangle([x, y, x + cell, y + cell], fill=color, outline=(200, 200, 200))
      text = f"{100 * v:.0f}"
      draw.text((x + (cell - _text_width(draw, text, small)) / 2, y + cell / 2 - 6), text,
                fill=WHITE if v > 0.5 else BLACK, font=small)
  draw.text((6, top + k * cell + 8), caption, fill=BLACK, font=small)
  return np.asarray(img)


def outlines(ids):
  """(H, W) bool: the pixels whose segment id differs from the pixel below or to the
  right (and those neighbours), i.e. both sides of every segment boundary."""
  ids = np.asarray(ids)
  edge = np.zeros(ids.shape, bool)
  down, right = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
  edge[1:] |= down
  edge[:-1] |= down
  edge[:, 1:] |= right
  edge[:, :-1] |= right
  return edge


def panoptic_overlay(image, ids, classes, palette, alpha=0.5):
  """The image blended with the colour of each segment's class (`classes`: {segment
  id: class index into the (256, 3) `palette`}; id 0 = void, left as the image), each
  instance of a class in its own shade, with white outlines around every segment."""
  image, ids = np.asarray(image, np.float32), np.asarray(ids)
  colour = image.copy()
  palette = np.asarray(palette, np.float32)
  for sid, cls in sorted(classes.items()):
    shade = 0.75 + 0.5 * ((sid * 0.6180339887) % 1.0)  # the golden ratio spreads neighbouring ids
    colour[ids == sid] = np.clip(palette[cls] * shade, 0, 255)
  out = np.where((ids != 0)[..., None], (1 - alpha) * image + alpha * colour, image)
  out[outlines(ids)] = WHITE
  return out.round().astype(np.uint8)


def save_png(path, image):
  Image.fromarray(np.asarray(image, np.uint8)).save(path)


PREDICTION_TITLES = ("image", "ground truth", "prediction", "errors")


def prediction_row(image, label, pred, palette, ignore_index=255):
  """The panels of PREDICTION_TITLES for one image."""
  return [np.asarray(image, np.uint8), colorize(label, palette), colorize(pred, palette),
          error_map(np.asarray(pred), np.asarray(label), ignore_index)]


def instance_overlay(image, masks, classes, scores, boxes, palette, alpha=0.5):
  """The image with detected instances: each mask ((N, H, W) bool) blended in its
  class's colour (its own shade, white outlines, as panoptic_overlay), the higher score
  drawn over the lower where masks overlap, and each box outlined in the class colour."""
  masks, classes = np.asarray(masks, bool), np.asarray(classes)
  ids = np.zeros(np.asarray(image).shape[:2], np.int64)
  for k in np.argsort(np.asarray(scores), kind="stable"):  # ascending: the best painted last
    ids[masks[k]] = k + 1
  out = panoptic_overlay(image, ids, {k + 1: int(classes[k]) for k in range(len(classes))}, palette, alpha)
  img = Image.fromarray(out)
  draw = ImageDraw.Draw(img)
  for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
    draw.rectangle([x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)], outline=tuple(int(v) for v in palette[classes[k]]))
  return np.asarray(img)
