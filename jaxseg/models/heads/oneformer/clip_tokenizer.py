"""CLIP's byte-level BPE tokeniser (Radford et al. 2021), which OneFormer uses for its
task text "the task is {task}" and, in training, the text mapper's class texts.

  text    ftfy.fix_text, HTML unescaped twice, runs of whitespace -> " ", lower case
  words   split by CLIP's pattern (contractions, letter runs, single digits, other runs)
  bytes   each word's UTF-8 bytes mapped to printable characters (GPT-2's byte table),
          its last symbol marked as a word end ("</w>")
  BPE     repeatedly merge the adjacent pair of lowest rank in the merge list
  ids     [<|startoftext|>] + tokens[:length - 2] + [<|endoftext|>], zero-padded to
          `length` (77 in OneFormer: transformers' `task_seq_len`; its processor
          multiplies the ids by the attention mask, so the padding is 0)

The vocabulary is CLIP's bpe_simple_vocab_16e6.txt.gz (49152 merges used, vocabulary
49408, start 49406, end 49407), read from an installed package (mmsegmentation ships
it as mmseg/utils/bpe_simple_vocab_16e6.txt.gz; the package is located, not imported).
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os

import numpy as np

START, END = "<|startoftext|>", "<|endoftext|>"
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"


def default_vocab_path():
  """CLIP's merge file from the installed mmsegmentation package."""
  spec = importlib.util.find_spec("mmseg")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"CLIP's BPE vocabulary ({VOCAB_FILE}) comes from the mmsegmentation package, which is "
                            "not installed: pip install -e \".[oneformer]\" (or pass vocab_path=)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "utils", VOCAB_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the installed mmsegmentation package")
  return path


def bytes_to_unicode():
  """GPT-2's table: every byte -> a printable character; printable Latin-1 bytes map to
  themselves, the others to code points from 256 up, in byte order."""
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def read_merges(path):
  """The first 49152 - 256 - 2 merges of the file (its first line is a header), as CLIP."""
  with gzip.open(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  return [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]


def build_vocab(merges):
  """token -> id: the 256 byte symbols, the same with "</w>", one per merge, then the
  start and end tokens (49408 in all)."""
  symbols = list(bytes_to_unicode().values())
  tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
  return {t: i for i, t in enumerate(tokens)}


def clean(text):
  import ftfy  # noqa: PLC0415 (only needed when text is tokenised)
  import regex  # noqa: PLC0415
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return regex.sub(r"\s+", " ", text).strip().lower()


class CLIPTokenizer:
  def __init__(self, vocab_path: str | None = None):
    import regex  # noqa: PLC0415
    merges = read_merges(vocab_path or default_vocab_path())
    self.encoder = build_vocab(merges)
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.byte_encoder = bytes_to_unicode()
    self.pattern = regex.compile(PATTERN, regex.IGNORECASE)
    self.start, self.end = self.encoder[START], self.encoder[END]

  @functools.lru_cache(maxsize=4096)
  def bpe(self, word):
    """Merges of one word (its byte symbols), lowest-ranked adjacent pair first."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
      pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(symbols):  # every occurrence of the pair, left to right
        if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return tuple(symbols)

  def encode(self, text):
    """BPE token ids of `text`, without the start and end tokens."""
    ids = []
    for word in self.pattern.findall(clean(text)):
      word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
      ids.extend(self.encoder[t] for t in self.bpe(word))
    return ids

  def __call__(self, texts, length=77):
    """(len(texts), length) int32 ids: start, tokens (truncated), end, zeros."""
    out = np.zeros((len(texts), length), np.int32)
    for row, text in zip(out, texts):
      ids = [self.start] + self.encode(text)[:length - 2] + [self.end]
      row[:len(ids)] = ids
    return out


@functools.lru_cache(maxsize=1)
def default_tokenizer():
  return CLIPTokenizer()


TASKS = ("semantic", "instance", "panoptic")


def task_ids(tasks, length=77):
  """(B, length) ids of "the task is {task}" for each task name of `tasks`."""
  for t in tasks:
    if t not in TASKS:
      raise ValueError(f"unknown task {t!r}: expected one of {TASKS}")
  return default_tokenizer()([f"the task is {t}" for t in tasks], length)
