"""One lock for every model load in the process (transformers, sentence-transformers, mem0's embedder).

While `from_pretrained` runs, transformers 5 patches torch's weight-initialisation and tensor-creation functions
process-wide, and restores them after. Two loads in different threads interleave those patches, and the functions
can stay patched for good: every later load in the process then leaves tied weights on the meta device
(`lm_head.weight | MISSING`, then "Cannot copy out of meta tensor" when the model moves). Measured here: 4
concurrent sentence-transformers loads were enough, and mem0-lib builds one embedder per history in worker
threads. So every load the harness starts holds `MODEL_LOAD_LOCK`; it is re-entrant because a load can convert a
GGUF (itself a load) first.
"""

from __future__ import annotations

import threading

MODEL_LOAD_LOCK = threading.RLock()
