"""Sequential reuse, the `fast` ablation (docs/method.md §3.6; the paper's Figure 2b; upstream fast.py).

One generator is optimised directly, k steps per call, and kept for the next call: no copy, no meta
step. A fresh inner Adam each call, as upstream.
"""

import copy

from fdk.methods.generative import GeneratorSynthesizer


class SequentialSynthesizer(GeneratorSynthesizer):
    def run(self, targets, student, snapshot_every, update):
        generator = self.generator if update else copy.deepcopy(self.generator)
        return self.invert(generator, targets, student, snapshot_every)
