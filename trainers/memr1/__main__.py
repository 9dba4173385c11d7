"""`python -m trainers.memr1 {grpo,ppo,sft} --agent {answer,manager} --model SPEC --config FILE --output DIR`."""

import sys

from trainers.memr1.cli import main

sys.exit(main())
