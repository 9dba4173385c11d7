"""`python -m harness.lm_eval_tasks` prints the `--include_path` for lm_eval; `--model-dir SPEC` prints the
Hugging Face directory of a model name as `hf:SPEC` resolves it (`gguf:smollm2-135m` is converted once), for
lm_eval's `--model_args pretrained=DIR`."""

from __future__ import annotations

import argparse
import sys

from harness.lm_eval_tasks import include_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lm_eval_tasks", description=__doc__)
    parser.add_argument(
        "--model-dir", metavar="SPEC", help="print the directory `hf:SPEC` loads (e.g. gguf:smollm2-135m) instead"
    )
    args = parser.parse_args(argv)
    if args.model_dir is None:
        print(include_path())
        return 0
    from harness.llm.base import LLMError
    from harness.llm.gguf_convert import resolve_hf_model

    try:
        print(resolve_hf_model(args.model_dir))
    except LLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
