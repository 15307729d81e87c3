"""Synthesis methods, one file each, picked by name from one dict.

Adding a method means adding a file with a `Synthesizer` subclass (fdk/methods/base.py says what it
implements) and an entry here; `DistillConfig.method` and `fdk distill --set method=...` then find it.
"""

from fdk.inputs import teacher_inputs
from fdk.methods.base import SynthConfig, Synthesized, Synthesizer, synth_part
from fdk.methods.cmi import ContrastiveSynthesizer
from fdk.methods.deepinversion import DeepInversionSynthesizer
from fdk.methods.fast import SequentialSynthesizer
from fdk.methods.fast_meta import FastMetaSynthesizer
from fdk.methods.fast_meta_imagenet import FastMetaImageNetSynthesizer
from fdk.methods.generative_baselines import GenerativeBaselineSynthesizer
from fdk.methods.no_reuse import NoReuseSynthesizer
from fdk.utils import FdkError

METHODS: dict[str, type[Synthesizer]] = {
    "fast_meta": FastMetaSynthesizer,  # FastDFKD: meta reuse (Fig. 2c)
    "fast_meta_imagenet": FastMetaImageNetSynthesizer,  # FastDFKD at 224 px: generator and latent meta-learned
    "fast": SequentialSynthesizer,  # sequential reuse (Fig. 2b)
    "no_reuse": NoReuseSynthesizer,  # the generator re-initialised every call (Fig. 2a)
    "deepinversion": DeepInversionSynthesizer,  # pixels optimised directly (DeepInv-2k)
    # Table 1's generator baselines: one generator trained against the student, fresh batches per KD step
    "dafl": GenerativeBaselineSynthesizer,
    "zskt": GenerativeBaselineSynthesizer,
    "dfq": GenerativeBaselineSynthesizer,
    "dfad": GenerativeBaselineSynthesizer,
    "cmi": ContrastiveSynthesizer,  # contrastive model inversion: a fresh generator per batch (CMI-500)
}


def check_method(name: str) -> None:
    if name not in METHODS:
        raise FdkError(f"method={name!r} is not valid; choose one of {', '.join(METHODS)}")


def make_synthesizer(cfg: SynthConfig, teacher, inputs=None) -> Synthesizer:
    """The synthesizer named by cfg.method, on the teacher's device, given the part of cfg it uses.

    inputs: the teacher's input contract (fdk.InputSpec); default: the one `load_model` attached to
    the teacher, else the spec of the config's dataset (fdk.inputs.teacher_inputs checks it).
    """
    check_method(cfg.method)
    inputs = teacher_inputs(teacher, getattr(cfg, "dataset", "cifar10"), inputs)
    return METHODS[cfg.method](synth_part(cfg), teacher, inputs)


__all__ = ["METHODS", "check_method", "SynthConfig", "Synthesized", "Synthesizer", "make_synthesizer", "synth_part"]
