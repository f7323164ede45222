"""Shared-prompt packing: each prompt once, its chosen and rejected responses after it.

The plain layout runs ``[x*_k, y_w]`` and ``[x*_k, y_l]`` as two padded rows, computing the prompt
twice. Here one *group* ``[x*_k | y_w | y_l]`` holds both, and a block attention mask makes it
equivalent to the two sequences:

    token i attends token j  ⇔  same group, j ≤ i, and (j is a prompt token or j is in i's segment)

with position ids restarting after the prompt for every response (``y_w`` and ``y_l`` both start
at position |x*_k|). The first token of each response is predicted from the last prompt token.
Groups are then packed first-fit-decreasing into rows no longer than the longest group, so rows
carry little padding; padding tokens form their own group and attend only among themselves.

The batch this module builds (all tensors) is read by :func:`amopo.train.step.sequence_stats`:

    input_ids, position_ids, segment_group, segment_kind   [R, L]
    predict_index  [N]   flat index (row · L + column) of the position predicting response token n
    target_ids     [N]   that token
    seq_index      [N]   which output sequence the token belongs to (the plain layout's order)
    num_seqs, num_tokens  scalars (sequences; logical prompt + response tokens, no padding)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

PAD_GROUP = -1
PROMPT_KIND = 0


class Group(NamedTuple):
    """One prompt and the responses that share it; ``seq_ids[j]`` is response j's output index."""

    prompt: list[int]
    responses: list[list[int]]
    seq_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(r) for r in self.responses)


def pair_groups(rows: Sequence[dict], conditioned: bool) -> list[Group]:
    """Groups for a micro-batch, numbering sequences like :func:`amopo.train.batching.collate`:
    chosen block first, then rejected, each example-major and dimension-minor (b·K + k)."""
    k = len(rows[0]["prompt_ids"]) if conditioned and rows else 1
    n = len(rows) * k
    groups = []
    for b, row in enumerate(rows):
        prompts = row["prompt_ids"] if conditioned else [row["plain_prompt_ids"]]
        for j, prompt in enumerate(prompts):
            i = b * k + j
            groups.append(Group(list(prompt), [list(row["chosen_ids"]), list(row["rejected_ids"])], [i, n + i]))
    return groups


def pack_rows(lengths: Sequence[int], capacity: int | None = None) -> list[list[int]]:
    """First-fit decreasing: indices of ``lengths`` per row, no row longer than ``capacity``
    (default: the longest item, so packing never lengthens a row)."""
    capacity = capacity or max(lengths, default=0)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def pack_groups(groups: Sequence[Group], pad_id: int, capacity: int | None = None) -> dict[str, Tensor]:
    """The packed batch for ``groups`` (see the module docstring)."""
    layout = pack_rows([g.length for g in groups], capacity)
    width = max((sum(groups[i].length for i in row) for row in layout), default=1)
    shape = (max(len(layout), 1), max(width, 1))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_group = torch.full(shape, PAD_GROUP, dtype=torch.long)
    segment_kind = torch.zeros(shape, dtype=torch.long)
    predict, targets, seq_index = [], [], []
    num_tokens = 0
    for r, row in enumerate(layout):
        col = 0
        for gi in row:
            group = groups[gi]
            p = len(group.prompt)
            base = r * shape[1]
            input_ids[r, col:col + p] = torch.tensor(group.prompt, dtype=torch.long)
            position_ids[r, col:col + p] = torch.arange(p)
            segment_group[r, col:col + p] = gi
            last_prompt = col + p - 1
            col += p
            for j, (resp, sid) in enumerate(zip(group.responses, group.seq_ids)):
                m = len(resp)
                num_tokens += p + m
                if m == 0:
                    continue
                input_ids[r, col:col + m] = torch.tensor(resp, dtype=torch.long)
                position_ids[r, col:col + m] = torch.arange(p, p + m)
                segment_group[r, col:col + m] = gi
                segment_kind[r, col:col + m] = j + 1
                # Response token t is predicted by the previous token of its own sequence: the
                # last prompt token for t = 0 (none when the prompt is empty, as in the plain layout).
                for t, tok in enumerate(resp):
                    if t == 0 and p == 0:
                        continue
                    predict.append(base + (last_prompt if t == 0 else col + t - 1))
                    targets.append(tok)
                    seq_index.append(sid)
                col += m
    num_seqs = sum(len(g.seq_ids) for g in groups)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_group": segment_group,
        "segment_kind": segment_kind,
        "predict_index": torch.tensor(predict, dtype=torch.long),
        "target_ids": torch.tensor(targets, dtype=torch.long),
        "seq_index": torch.tensor(seq_index, dtype=torch.long),
        "num_seqs": torch.tensor(num_seqs),
        "num_tokens": torch.tensor(num_tokens),
    }


def collate_packed(rows: Sequence[dict], conditioned: bool, pad_id: int) -> dict[str, Tensor]:
    """A micro-batch in the shared-prompt packed layout; same sequences and order as ``collate``."""
    return pack_groups(pair_groups(rows, conditioned), pad_id)


def is_packed(batch: dict) -> bool:
    return "predict_index" in batch


def block_attention_mask(segment_group: Tensor, segment_kind: Tensor) -> Tensor:
    """Boolean mask [R, 1, L, L], True where query i may attend key j (see the module docstring)."""
    n = segment_group.shape[1]
    pos = torch.arange(n, device=segment_group.device)
    causal = pos.view(1, n, 1) >= pos.view(1, 1, n)
    same_group = segment_group.unsqueeze(2) == segment_group.unsqueeze(1)
    kind_q, kind_k = segment_kind.unsqueeze(2), segment_kind.unsqueeze(1)
    visible = (kind_k == PROMPT_KIND) | (kind_k == kind_q)
    return (causal & same_group & visible).unsqueeze(1)


def segment_mask_mod(segment_group: Tensor, segment_kind: Tensor):
    """``mask_mod(b, h, q, kv)`` of the rule of :func:`block_attention_mask`, for ``flex_attention``:

        q attends kv  ⇔  kv ≤ q, same group, and (kv is a prompt token or kv is in q's segment)

    so a response sees its group's prompt and, causally, itself, never the other response; padding
    (group ``PAD_GROUP``, prompt kind) sees only earlier padding of its row, never an empty row.
    """
    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        same_group = segment_group[b, q] == segment_group[b, kv]
        kind_kv = segment_kind[b, kv]
        visible = (kind_kv == PROMPT_KIND) | (kind_kv == segment_kind[b, q])
        return (kv <= q) & same_group & visible

    return mask_mod


def flex_block_mask(segment_group: Tensor, segment_kind: Tensor):
    """The ``BlockMask`` [R, 1, L, L] of :func:`segment_mask_mod` on the segments' device: the block
    attention mask in the form ``flex_attention`` takes, which skips the blocks it masks entirely."""
    from torch.nn.attention.flex_attention import create_block_mask

    rows, length = segment_group.shape
    return create_block_mask(segment_mask_mod(segment_group, segment_kind), B=rows, H=None,
                             Q_LEN=length, KV_LEN=length, device=segment_group.device)
