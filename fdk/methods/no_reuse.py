"""No reuse (docs/method.md §3.6; the paper's Figure 2a; CMI without feature reuse).

The generator is re-initialised before every call, so nothing learnt for one batch helps the next:
the baseline that meta reuse is measured against.
"""

import copy

from fdk.generator import reinitialize
from fdk.methods.generative import GeneratorSynthesizer


class NoReuseSynthesizer(GeneratorSynthesizer):
    def run(self, targets, student, snapshot_every, update):
        generator = self.generator if update else copy.deepcopy(self.generator)
        reinitialize(generator)
        return self.invert(generator, targets, student, snapshot_every)
