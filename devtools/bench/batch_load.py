"""A batch for the bench, stored the way POST /batches stores one; run in `manage.py shell`.

The driver has no Django: it runs `submit` in a shell of the bench's own environment, which
prints when the submission started (epoch seconds) and the batch's id.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model

from devtools.bench.load import TEXT
from jobs import dispatch, kinds
from jobs.batch_files import BatchItem
from jobs.batches import batch_submit

KIND = "summarize"


def submit(owner: str, count: int, tag: str) -> None:
    user, _ = get_user_model().objects.get_or_create(username=owner)
    params = {k: v for k, v in kinds.get_kind(KIND).EXAMPLES[0].input.items() if k != "text"}
    items = [
        BatchItem(number=n, custom_id=str(n), input={"text": TEXT.format(ref=f"{tag}-{n}")})
        for n in range(1, count + 1)
    ]
    started = time.time()
    batch = batch_submit(
        owner=user, kind=KIND, model=None, mode="standard", params=params, items=items
    ).batch
    dispatch.batches_kick()
    print(f"{started} {batch.id}")
